//! Tests of `sentencepiece`.

use super::wire::*;
use super::*;

const TINY_MODEL: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/tiny/ckpt-fp16/tokenizer.model"
);

fn p() -> &'static Path {
    Path::new("test.model")
}

fn varint(mut v: u64, out: &mut Vec<u8>) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn tag(field: u32, wire: u8, out: &mut Vec<u8>) {
    varint(u64::from(field) << 3 | u64::from(wire), out);
}

fn len_field(field: u32, data: &[u8], out: &mut Vec<u8>) {
    tag(field, WIRE_LEN, out);
    varint(data.len() as u64, out);
    out.extend_from_slice(data);
}

fn piece_msg(text: &[u8], score: Option<f32>, kind: Option<u64>) -> Vec<u8> {
    let mut m = Vec::new();
    len_field(1, text, &mut m);
    if let Some(s) = score {
        tag(2, WIRE_FIXED32, &mut m);
        m.extend_from_slice(&s.to_le_bytes());
    }
    if let Some(k) = kind {
        tag(3, WIRE_VARINT, &mut m);
        varint(k, &mut m);
    }
    m
}

#[test]
fn tiny_model_decodes() {
    let m = ModelProto::load(Path::new(TINY_MODEL)).unwrap();
    assert_eq!(m.pieces.len(), 1000);
    assert_eq!(m.pieces[0].piece, "<unk>");
    assert_eq!(m.pieces[0].kind, PieceType::Unknown);
    assert_eq!(m.pieces[1].piece, "<s>");
    assert_eq!(m.pieces[1].kind, PieceType::Control);
    assert_eq!(m.pieces[2].kind, PieceType::Control);
    assert_eq!(m.pieces[3].piece, "<0x00>");
    assert_eq!(m.pieces[3].kind, PieceType::Byte);
    assert_eq!(m.pieces[999].piece, "%");
    assert_eq!(m.pieces[999].score, -740.0);
    assert_eq!(m.trainer_spec.model_type, ModelType::Bpe);
    assert_eq!(m.trainer_spec.vocab_size, 1000);
    assert!(m.trainer_spec.byte_fallback);
    assert_eq!(
        (
            m.trainer_spec.unk_id,
            m.trainer_spec.bos_id,
            m.trainer_spec.eos_id,
            m.trainer_spec.pad_id
        ),
        (0, 1, 2, -1)
    );
    assert_eq!(m.normalizer_spec.name, "identity");
    assert!(m.normalizer_spec.add_dummy_prefix);
    assert!(!m.normalizer_spec.remove_extra_whitespaces);
}

#[test]
fn defaults_and_unknown_fields() {
    let mut b = Vec::new();
    // Unknown fields of every wire type before, between and after pieces.
    tag(9, WIRE_VARINT, &mut b);
    varint(u64::MAX, &mut b);
    tag(10, WIRE_FIXED64, &mut b);
    b.extend_from_slice(&[1; 8]);
    tag(11, WIRE_FIXED32, &mut b);
    b.extend_from_slice(&[2; 4]);
    len_field(12, b"whatever", &mut b);
    tag(13, WIRE_START_GROUP, &mut b);
    tag(14, WIRE_START_GROUP, &mut b);
    tag(1, WIRE_VARINT, &mut b);
    varint(5, &mut b);
    tag(14, WIRE_END_GROUP, &mut b);
    tag(13, WIRE_END_GROUP, &mut b);
    len_field(1, &piece_msg(b"a", None, None), &mut b);
    // type 9 is outside the enum: keeps the default NORMAL; type given as a length field
    // (wrong wire type) is an unknown field.
    let mut pm = piece_msg("▁b".as_bytes(), Some(-1.5), Some(9));
    len_field(3, b"xx", &mut pm);
    len_field(1, &pm, &mut b);
    len_field(1, &piece_msg(b"c", None, Some(3)), &mut b);
    let m = ModelProto::parse(&b, p()).unwrap();
    assert_eq!(m.pieces.len(), 3);
    assert_eq!(m.pieces[0].score, 0.0);
    assert_eq!(m.pieces[0].kind, PieceType::Normal);
    assert_eq!(m.pieces[1].piece, "▁b");
    assert_eq!(m.pieces[1].score, -1.5);
    assert_eq!(m.pieces[1].kind, PieceType::Normal);
    assert_eq!(m.pieces[2].kind, PieceType::Control);
    assert_eq!(m.trainer_spec, TrainerSpec::default());
    assert_eq!(m.normalizer_spec, NormalizerSpec::default());
}

#[test]
fn sub_messages_merge() {
    let mut ts1 = Vec::new();
    tag(3, WIRE_VARINT, &mut ts1);
    varint(2, &mut ts1);
    let mut ts2 = Vec::new();
    tag(35, WIRE_VARINT, &mut ts2);
    varint(1, &mut ts2);
    tag(43, WIRE_VARINT, &mut ts2);
    varint(u64::MAX, &mut ts2); // -1 as int32
    let mut b = Vec::new();
    len_field(2, &ts1, &mut b);
    len_field(2, &ts2, &mut b);
    let m = ModelProto::parse(&b, p()).unwrap();
    assert_eq!(m.trainer_spec.model_type, ModelType::Bpe);
    assert!(m.trainer_spec.byte_fallback);
    assert_eq!(m.trainer_spec.pad_id, -1);
}

fn kind_of(bytes: &[u8]) -> SpmErrorKind {
    ModelProto::parse(bytes, p()).unwrap_err().kind
}

#[test]
fn malformed_wire_data() {
    // Truncated varint (tag byte with continuation bit, then nothing).
    assert!(matches!(
        kind_of(&[0x80]),
        SpmErrorKind::TruncatedVarint { offset: 0, .. }
    ));
    // Varint of 11 bytes.
    assert!(matches!(
        kind_of(&[0xff; 11]),
        SpmErrorKind::VarintTooLong { .. }
    ));
    // Length past the end.
    let e = kind_of(&[0x0a, 0x05, b'a']);
    assert!(matches!(
        e,
        SpmErrorKind::LengthPastEnd {
            len: 5,
            available: 1,
            ..
        }
    ));
    // A huge length must not allocate.
    let mut b = vec![0x0a];
    varint(u64::MAX >> 1, &mut b);
    assert!(matches!(kind_of(&b), SpmErrorKind::LengthPastEnd { .. }));
    // Truncated fixed32 / fixed64.
    assert!(matches!(
        kind_of(&[0x15, 1, 2]),
        SpmErrorKind::TruncatedFixed { width: 4, .. }
    ));
    assert!(matches!(
        kind_of(&[0x11, 1, 2]),
        SpmErrorKind::TruncatedFixed { width: 8, .. }
    ));
    // Wire types 6 and 7, field number 0.
    assert!(matches!(
        kind_of(&[0x0e]),
        SpmErrorKind::InvalidWireType { wire_type: 6, .. }
    ));
    assert!(matches!(
        kind_of(&[0x00]),
        SpmErrorKind::InvalidFieldNumber { .. }
    ));
    // Groups: stray end, unterminated, mismatched.
    assert!(matches!(
        kind_of(&[0x0c]),
        SpmErrorKind::UnexpectedEndGroup { field: 1, .. }
    ));
    assert!(matches!(
        kind_of(&[0x0b]),
        SpmErrorKind::UnterminatedGroup { field: 1, .. }
    ));
    assert!(matches!(
        kind_of(&[0x0b, 0x14]),
        SpmErrorKind::UnexpectedEndGroup { field: 2, .. }
    ));
    // Errors inside a piece name the piece.
    let mut b = Vec::new();
    len_field(1, &piece_msg(b"ok", None, None), &mut b);
    len_field(1, &[0x15, 0x00], &mut b);
    let e = ModelProto::parse(&b, p()).unwrap_err();
    assert!(matches!(
        e.kind,
        SpmErrorKind::TruncatedFixed {
            within: Within::Piece(1),
            ..
        }
    ));
    let msg = e.to_string();
    assert!(msg.starts_with("test.model: "), "{msg}");
    assert!(msg.contains("pieces[1]"), "{msg}");
}

#[test]
fn invalid_utf8_piece() {
    let mut b = Vec::new();
    len_field(1, &piece_msg(b"fine", None, None), &mut b);
    len_field(1, &piece_msg(b"\xff\xfe", None, None), &mut b);
    let e = ModelProto::parse(&b, p()).unwrap_err();
    assert!(matches!(
        e.kind,
        SpmErrorKind::InvalidUtf8Piece { index: 1, .. }
    ));
    assert!(e.to_string().contains("invalid UTF-8 piece at index 1"));
}

fn model(pieces: &[(&str, PieceType)], byte_fallback: bool) -> ModelProto {
    ModelProto {
        pieces: pieces
            .iter()
            .map(|&(s, kind)| Piece {
                piece: s.into(),
                score: 0.0,
                kind,
            })
            .collect(),
        trainer_spec: TrainerSpec {
            byte_fallback,
            ..TrainerSpec::default()
        },
        normalizer_spec: NormalizerSpec::default(),
    }
}

#[test]
fn validation_matches_sentencepiece() {
    use PieceType::*;
    let v = |m: ModelProto| m.validate(p()).map_err(|e| e.kind);
    assert!(v(model(&[("<unk>", Unknown), ("a", Normal)], false)).is_ok());
    // No UNKNOWN piece at all: sentencepiece refuses to load it ("unk is not defined",
    // checked with the Python package), and an empty model is not initialized.
    assert!(matches!(
        v(model(&[("a", Normal)], false)),
        Err(SpmErrorKind::NoUnknown { pieces: 1 })
    ));
    assert!(matches!(
        v(model(&[], false)),
        Err(SpmErrorKind::NoUnknown { pieces: 0 })
    ));
    assert!(matches!(
        v(model(&[("<unk>", Unknown), ("", Normal)], false)),
        Err(SpmErrorKind::EmptyPiece { index: 1 })
    ));
    assert!(matches!(
        v(model(
            &[("a", Normal), ("b", Control), ("a", Control)],
            false
        )),
        Err(SpmErrorKind::DuplicatePiece {
            index: 2,
            first: 0,
            ..
        })
    ));
    assert!(matches!(
        v(model(&[("<unk>", Unknown), ("<u2>", Unknown)], false)),
        Err(SpmErrorKind::DuplicateUnknown { index: 1, first: 0 })
    ));
    assert!(matches!(
        v(model(&[("<0x00>", Byte)], false)),
        Err(SpmErrorKind::UnexpectedBytePiece { index: 0, .. })
    ));
    assert!(matches!(
        v(model(&[("<0x0a>", Byte)], true)),
        Err(SpmErrorKind::InvalidBytePiece { index: 0, .. })
    ));
    assert!(matches!(
        v(model(&[("<0x0A>", Byte)], true)),
        Err(SpmErrorKind::BytePieceCount { found: 1 })
    ));
    let names: Vec<String> = (0..=255u8).map(|b| format!("<0x{b:02X}>")).collect();
    let mut all: Vec<(&str, PieceType)> = vec![("<unk>", Unknown)];
    all.extend(names.iter().map(|s| (s.as_str(), Byte)));
    assert!(v(model(&all, true)).is_ok());
    assert_eq!(byte_piece_value("<0xFF>"), Some(255));
    assert_eq!(byte_piece_value("<0x0>"), None);
}

#[test]
fn truncations_of_the_real_model_never_panic() {
    let bytes = std::fs::read(TINY_MODEL).unwrap();
    for cut in (0..bytes.len()).step_by(7) {
        let _ = ModelProto::parse(&bytes[..cut], p()).and_then(|m| m.validate(p()));
    }
}

/// A small deterministic fuzz loop: random byte mutations of the real model must give a
/// model or an error, never a panic.
#[test]
fn random_mutations_never_panic() {
    let bytes = std::fs::read(TINY_MODEL).unwrap();
    let mut rng = crate::test_rng::XorShift64(0x9e37_79b9_7f4a_7c15);
    let mut next = move || rng.next();
    let (mut ok, mut failed) = (0u32, 0u32);
    for _ in 0..3000 {
        let mut b = bytes.clone();
        let edits = 1 + (next() % 8) as usize;
        for _ in 0..edits {
            let i = (next() % b.len() as u64) as usize;
            match next() % 4 {
                0 => b[i] = next() as u8,
                1 => b[i] ^= 1 << (next() % 8),
                2 => b.truncate(i.max(1)),
                _ => b.insert(i, next() as u8),
            }
        }
        match ModelProto::parse(&b, p()).and_then(|m| m.validate(p()).map(|_| m)) {
            Ok(_) => ok += 1,
            Err(e) => {
                assert!(e.to_string().starts_with("test.model: "));
                failed += 1;
            }
        }
    }
    assert_eq!(ok + failed, 3000);
    assert!(failed > 0);
}
