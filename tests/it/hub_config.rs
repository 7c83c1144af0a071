//! `HubConfig::resolve`: flags over `HF_*` environment over defaults, without touching the
//! process environment; the token never shows in `Debug`.

use std::collections::HashMap;
use std::path::PathBuf;

use bitconv::hub::{self, HubConfig, HubFlags, TokenSource};

fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k: &str| map.get(k).cloned()
}

#[test]
fn defaults_follow_home_and_xdg() {
    let cfg = HubConfig::resolve(&HubFlags::default(), &env_of(&[("HOME", "/home/u")])).unwrap();
    assert_eq!(cfg.endpoint, "https://huggingface.co");
    assert_eq!(
        cfg.cache_dir,
        PathBuf::from("/home/u/.cache/huggingface/hub")
    );
    assert!(!cfg.offline);
    assert!(cfg.token.is_none());
    assert_eq!(cfg.token_source, TokenSource::None);

    let cfg = HubConfig::resolve(
        &HubFlags::default(),
        &env_of(&[("HOME", "/home/u"), ("XDG_CACHE_HOME", "/xdg")]),
    )
    .unwrap();
    assert_eq!(cfg.cache_dir, PathBuf::from("/xdg/huggingface/hub"));

    let cfg = HubConfig::resolve(
        &HubFlags::default(),
        &env_of(&[
            ("HOME", "/home/u"),
            ("XDG_CACHE_HOME", "/xdg"),
            ("HF_HOME", "~/hf"),
        ]),
    )
    .unwrap();
    assert_eq!(cfg.cache_dir, PathBuf::from("/home/u/hf/hub"));

    let env = env_of(&[
        ("HOME", "/home/u"),
        ("HF_HOME", "/hf"),
        ("HUGGINGFACE_HUB_CACHE", "/legacy"),
    ]);
    let cfg = HubConfig::resolve(&HubFlags::default(), &env).unwrap();
    assert_eq!(cfg.cache_dir, PathBuf::from("/legacy"));

    let env = env_of(&[
        ("HF_HOME", "/hf"),
        ("HUGGINGFACE_HUB_CACHE", "/legacy"),
        ("HF_HUB_CACHE", "/cache"),
    ]);
    let cfg = HubConfig::resolve(&HubFlags::default(), &env).unwrap();
    assert_eq!(cfg.cache_dir, PathBuf::from("/cache"));

    let flags = HubFlags {
        cache_dir: Some("/flag".into()),
        ..HubFlags::default()
    };
    assert_eq!(
        HubConfig::resolve(&flags, &env).unwrap().cache_dir,
        PathBuf::from("/flag")
    );

    // No home, no cache variable: a clear error.
    let err = HubConfig::resolve(&HubFlags::default(), &env_of(&[])).unwrap_err();
    assert!(err.to_string().contains("HF_HUB_CACHE"), "{err}");
}

#[test]
fn endpoint_flag_over_env() {
    let env = env_of(&[("HOME", "/h"), ("HF_ENDPOINT", "https://hf-mirror.com/")]);
    let cfg = HubConfig::resolve(&HubFlags::default(), &env).unwrap();
    assert_eq!(cfg.endpoint, "https://hf-mirror.com");
    let flags = HubFlags {
        endpoint: Some("http://127.0.0.1:9/prefix".into()),
        ..HubFlags::default()
    };
    assert_eq!(
        HubConfig::resolve(&flags, &env).unwrap().endpoint,
        "http://127.0.0.1:9/prefix"
    );
    for bad in [
        "ftp://x",
        "huggingface.co",
        "http://",
        "http://a b",
        "http://u@host/",
    ] {
        let flags = HubFlags {
            endpoint: Some(bad.into()),
            ..HubFlags::default()
        };
        assert!(HubConfig::resolve(&flags, &env).is_err(), "{bad}");
    }
    let flags = HubFlags {
        endpoint: Some("https://user:hf_secret@hub.example".into()),
        ..HubFlags::default()
    };
    let err = HubConfig::resolve(&flags, &env).unwrap_err();
    assert!(!err.to_string().contains("hf_secret"), "{err}");
}

#[test]
fn token_precedence_and_redaction() {
    let dir = tempfile::tempdir().unwrap();
    let hf_home = dir.path().join("hf");
    std::fs::create_dir_all(&hf_home).unwrap();
    std::fs::write(hf_home.join("token"), "hf_fromHomeFile\n").unwrap();
    let other = dir.path().join("other-token");
    std::fs::write(&other, "hf_fromTokenPath").unwrap();
    let home = hf_home.to_string_lossy().into_owned();
    let other_s = other.to_string_lossy().into_owned();

    let cfg = HubConfig::resolve(&HubFlags::default(), &env_of(&[("HF_HOME", &home)])).unwrap();
    assert_eq!(cfg.token_source, TokenSource::File(hf_home.join("token")));
    let dbg = format!("{cfg:?}");
    assert!(!dbg.contains("hf_fromHomeFile"), "{dbg}");
    assert!(dbg.contains("<redacted>"));

    let env = env_of(&[("HF_HOME", &home), ("HF_TOKEN_PATH", &other_s)]);
    let cfg = HubConfig::resolve(&HubFlags::default(), &env).unwrap();
    assert_eq!(cfg.token_source, TokenSource::File(other.clone()));

    let env = env_of(&[
        ("HF_HOME", &home),
        ("HF_TOKEN_PATH", &other_s),
        ("HF_TOKEN", "hf_fromEnv"),
    ]);
    let cfg = HubConfig::resolve(&HubFlags::default(), &env).unwrap();
    assert_eq!(cfg.token_source, TokenSource::Env);
    assert!(!format!("{cfg:?}").contains("hf_fromEnv"));

    let flags = HubFlags {
        token: Some("hf_fromFlag".into()),
        ..HubFlags::default()
    };
    let cfg = HubConfig::resolve(&flags, &env).unwrap();
    assert_eq!(cfg.token_source, TokenSource::Flag);
    assert!(!format!("{cfg:?}").contains("hf_fromFlag"));
    assert!(!format!("{flags:?}").contains("hf_fromFlag"));

    // HF_HUB_DISABLE_IMPLICIT_TOKEN: only an explicit --token counts.
    let env = env_of(&[
        ("HF_HOME", &home),
        ("HF_TOKEN", "hf_fromEnv"),
        ("HF_HUB_DISABLE_IMPLICIT_TOKEN", "1"),
    ]);
    assert!(HubConfig::resolve(&HubFlags::default(), &env)
        .unwrap()
        .token
        .is_none());
    assert!(HubConfig::resolve(&flags, &env).unwrap().token.is_some());

    // A token with a newline inside would inject headers: refused, without echoing it.
    let env = env_of(&[("HF_HOME", &home), ("HF_TOKEN", "hf_a\r\nX-Evil: 1")]);
    let err = HubConfig::resolve(&HubFlags::default(), &env).unwrap_err();
    assert!(!err.to_string().contains("hf_a"), "{err}");
}

#[test]
fn offline_truthy_values() {
    for v in ["1", "true", "TRUE", "yes", "On"] {
        let env = env_of(&[("HOME", "/h"), ("HF_HUB_OFFLINE", v)]);
        assert!(
            HubConfig::resolve(&HubFlags::default(), &env)
                .unwrap()
                .offline,
            "{v}"
        );
    }
    for v in ["0", "false", "no", "off", "", "2"] {
        let env = env_of(&[("HOME", "/h"), ("HF_HUB_OFFLINE", v)]);
        assert!(
            !HubConfig::resolve(&HubFlags::default(), &env)
                .unwrap()
                .offline,
            "{v:?}"
        );
    }
    let flags = HubFlags {
        offline: true,
        ..HubFlags::default()
    };
    assert!(
        HubConfig::resolve(&flags, &env_of(&[("HOME", "/h")]))
            .unwrap()
            .offline
    );
    assert!(hub::is_truthy(" yes "));
}

#[test]
fn retry_test_knob() {
    let env = env_of(&[("HOME", "/h"), ("BITCONV_HUB_RETRY_BASE_MS", "2")]);
    let cfg = HubConfig::resolve(&HubFlags::default(), &env).unwrap();
    assert_eq!(cfg.retry.base_delay.as_millis(), 2);
    assert!(cfg.retry.max_delay.as_millis() <= 32);
}

#[test]
fn known_repos_for_fetch_list() {
    let known = hub::known_repos();
    assert_eq!(known[0].repo, "1bitLLM/bitnet_b1_58-large");
    let three_b = hub::find_known("1bitLLM/bitnet_b1_58-3B").unwrap();
    assert!(!three_b.output_types().contains(&"tq1_0"));
    assert!(three_b.output_types().contains(&"tl2"));
    let two_b = hub::find_known("microsoft/BitNet-b1.58-2B-4T").unwrap();
    assert_eq!(two_b.family, "bitnet-b1.58");
    assert!(two_b.output_types().contains(&"tq2_0") && two_b.output_types().contains(&"tl1"));
    let falcon3 = hub::find_known("tiiuae/Falcon3-3B-1.58bit").unwrap();
    assert!(falcon3.output_types().contains(&"tl2") && falcon3.output_types().contains(&"tq2_0"));
}
