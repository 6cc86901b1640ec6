//! Behaviour of the public API: the shipped themes, degrading, patches,
//! error messages, loading from the config directory, and hostile input.

use std::path::PathBuf;

use skymap_themes::{
    Color, ColorDepth, Role, Style, Theme, ThemeError, builtin, builtin_names, load, parse, patch,
    user_theme_path,
};

const SHIPPED: [(&str, &str); 3] = [
    ("dark", include_str!("../dark.toml")),
    ("light", include_str!("../light.toml")),
    ("high-contrast", include_str!("../high-contrast.toml")),
];

fn dark() -> Theme {
    builtin("dark").expect("dark theme")
}

fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let vars: Vec<(String, String)> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    move |name: &str| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
}

fn error_text(text: &str) -> String {
    parse(text, "t.toml").expect_err(text).to_string()
}

fn patch_error_text(text: &str) -> String {
    patch(&dark(), text, "~/.config/skymap/theme.toml")
        .expect_err(text)
        .to_string()
}

#[test]
fn every_builtin_parses_and_styles_every_role() {
    assert_eq!(builtin_names(), ["dark", "light", "high-contrast"]);
    for (name, text) in SHIPPED {
        let theme = parse(text, name).unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(theme.name, name);
        assert_eq!(builtin(name), Some(theme.clone()));
        for &role in Role::ALL {
            assert!(
                theme.style(role).fg.is_some(),
                "{name}: {role} has no foreground"
            );
        }
    }
    assert_eq!(builtin("solarized"), None);
}

#[test]
fn builtins_differ_where_it_matters() {
    let dark = dark();
    let light = builtin("light").expect("light");
    let contrast = builtin("high-contrast").expect("high-contrast");
    assert_ne!(dark.style(Role::Text), light.style(Role::Text));
    assert_eq!(contrast.style(Role::Text).bg, Some(Color::Rgb(0, 0, 0)));
    let dropped = contrast.style(Role::Dropped);
    assert_eq!(
        (dropped.bg, dropped.bold),
        (Some(Color::Rgb(255, 0, 0)), true)
    );
}

#[test]
fn to_toml_round_trips() {
    for name in builtin_names() {
        let theme = builtin(name).expect("builtin");
        assert_eq!(parse(&theme.to_toml(), "dump").expect("reparse"), theme);
    }
    let mut odd = Theme::new("a \"quoted\" \\ name");
    for &role in Role::ALL {
        odd.set_style(role, Style::fg(Color::Indexed(role as u8)));
    }
    odd.set_style(
        Role::Flash,
        Style {
            fg: Some(Color::Default),
            bg: Some(Color::Ansi(13)),
            italic: true,
            dim: true,
            underline: true,
            reversed: true,
            bold: false,
        },
    );
    odd.set_style(Role::Paused, Style::default());
    assert_eq!(parse(&odd.to_toml(), "dump").expect("reparse"), odd);
}

#[test]
fn colour_syntaxes_in_files() {
    let text = r##"
        [roles]
        text = "#AbCdEf"
        muted = { fg = "bright-red", bg = 42 }
        border = { fg = "default", bg = "42" }
        title = 0x10
        header = { fg = "WHITE" }
    "##;
    let theme = patch(&Theme::new("base"), text, "t").expect("patch");
    assert_eq!(
        theme.style(Role::Text),
        Style::fg(Color::Rgb(0xab, 0xcd, 0xef))
    );
    let muted = theme.style(Role::Muted);
    assert_eq!(
        (muted.fg, muted.bg),
        (Some(Color::Ansi(9)), Some(Color::Indexed(42)))
    );
    let border = theme.style(Role::Border);
    assert_eq!(
        (border.fg, border.bg),
        (Some(Color::Default), Some(Color::Indexed(42)))
    );
    assert_eq!(theme.style(Role::Title).fg, Some(Color::Indexed(16)));
    assert_eq!(theme.style(Role::Header).fg, Some(Color::Ansi(7)));
}

#[test]
fn degrade_to_256_and_16() {
    let mut theme = Theme::new("t");
    theme.set_style(Role::Dropped, Style::fg(Color::Rgb(0xff, 0, 0)));
    theme.set_style(Role::Muted, Style::fg(Color::Rgb(0x80, 0x80, 0x80)));
    theme.set_style(Role::Text, Style::fg(Color::Rgb(0x12, 0x12, 0x12)));
    let c256 = theme.degrade(ColorDepth::Ansi256);
    assert_eq!(c256.style(Role::Dropped).fg, Some(Color::Indexed(196)));
    assert_eq!(c256.style(Role::Muted).fg, Some(Color::Indexed(244)));
    assert_eq!(c256.style(Role::Text).fg, Some(Color::Indexed(233)));
    let c16 = theme.degrade(ColorDepth::Ansi16);
    assert_eq!(c16.style(Role::Dropped).fg, Some(Color::Ansi(9)));
    assert_eq!(c16.style(Role::Muted).fg, Some(Color::Ansi(8)));
    assert_eq!(c16.style(Role::Text).fg, Some(Color::Ansi(0)));
    assert_eq!(
        c16.style(Role::Dropped).fg.map(|c| c.to_string()),
        Some("bright-red".into())
    );
}

fn colors(theme: &Theme) -> impl Iterator<Item = Color> + '_ {
    Role::ALL
        .iter()
        .flat_map(|&role| [theme.style(role).fg, theme.style(role).bg])
        .flatten()
}

#[test]
fn builtins_stay_readable_in_16_colours() {
    for name in builtin_names() {
        let full = builtin(name).expect("builtin");
        let theme = full.degrade(ColorDepth::Ansi16);
        assert!(
            colors(&theme).all(|c| matches!(c, Color::Ansi(0..16) | Color::Default)),
            "{name}"
        );
        assert!(
            colors(&full.degrade(ColorDepth::Ansi256)).all(|c| !matches!(c, Color::Rgb(..))),
            "{name}"
        );
        let dropped = theme.style(Role::Dropped);
        let red = [Some(Color::Ansi(1)), Some(Color::Ansi(9))];
        assert!(
            red.contains(&dropped.fg) || red.contains(&dropped.bg),
            "{name}: {dropped:?}"
        );
        let forwarded = theme.style(Role::Forwarded).fg;
        assert!(
            [Some(Color::Ansi(2)), Some(Color::Ansi(10))].contains(&forwarded),
            "{name}"
        );
        let selection = theme.style(Role::Selection);
        assert!(
            selection.bg.is_some() && selection.bg != selection.fg,
            "{name}: {selection:?}"
        );
        // Text drawn on the terminal's own background must not vanish into it.
        let invisible: &[Color] = match *name {
            "light" => &[Color::Ansi(7), Color::Ansi(15)],
            _ => &[Color::Ansi(0)],
        };
        for &role in Role::ALL {
            let style = theme.style(role);
            if style.bg.is_none() {
                let fg = style.fg.expect("every builtin role has fg");
                assert!(!invisible.contains(&fg), "{name}: {role} is {fg}");
            }
        }
    }
}

#[test]
fn no_colour_keeps_attributes_and_reverses_selection() {
    for name in builtin_names() {
        let full = builtin(name).expect("builtin");
        let plain = full.degrade(ColorDepth::None);
        assert_eq!(colors(&plain).count(), 0, "{name}");
        for &role in Role::ALL {
            let (before, after) = (full.style(role), plain.style(role));
            assert_eq!(
                (before.bold, before.italic, before.underline, before.dim),
                (after.bold, after.italic, after.underline, after.dim)
            );
            if role != Role::Selection {
                assert_eq!(before.reversed, after.reversed);
            }
        }
        assert!(plain.style(Role::Selection).reversed, "{name}");
        assert!(!full.style(Role::Selection).reversed, "{name}");
    }
    assert_eq!(dark().degrade(ColorDepth::TrueColor), dark());
}

#[test]
fn patch_overrides_only_given_fields() {
    let base = dark();
    let text = r##"
        [roles]
        dropped = { bold = false }
        error = "bright-magenta"
        [roles.flash]
        bg = "#000080"
    "##;
    let theme = patch(&base, text, "p").expect("patch");
    assert_eq!(theme.name, "dark");
    assert_eq!(
        theme.style(Role::Dropped),
        Style {
            bold: false,
            ..base.style(Role::Dropped)
        }
    );
    assert_eq!(
        theme.style(Role::Error),
        Style {
            fg: Some(Color::Ansi(13)),
            ..base.style(Role::Error)
        }
    );
    assert!(
        theme.style(Role::Error).bold,
        "a bare colour keeps the attributes"
    );
    assert_eq!(
        theme.style(Role::Flash),
        Style {
            bg: Some(Color::Rgb(0, 0, 0x80)),
            ..base.style(Role::Flash)
        }
    );
    let changed: Vec<Role> = Role::ALL
        .iter()
        .copied()
        .filter(|&r| theme.style(r) != base.style(r))
        .collect();
    assert_eq!(changed, [Role::Dropped, Role::Error, Role::Flash]);
    assert_eq!(patch(&base, "", "empty").expect("empty patch"), base);
}

#[test]
fn patch_with_base_and_name() {
    let light = builtin("light").expect("light");
    let text = "base = \"light\"\nname = \"mine\"\n[roles]\nok = \"green\"\n";
    let theme = patch(&dark(), text, "p").expect("patch");
    assert_eq!(theme.name, "mine");
    assert_eq!(
        theme.style(Role::Ok),
        Style {
            fg: Some(Color::Ansi(2)),
            ..light.style(Role::Ok)
        }
    );
    assert_eq!(theme.style(Role::Text), light.style(Role::Text));
    assert_eq!(
        patch_error_text("base = \"lihgt\""),
        "~/.config/skymap/theme.toml:1: base: unknown builtin theme \"lihgt\" (did you mean \"light\"?) \
         (built-in themes: dark, light, high-contrast)"
    );
    // `base` only means something in a patch.
    let full = format!("base = \"dark\"\n{}", &SHIPPED[0].1);
    assert!(error_text(&full).starts_with("t.toml:1: unknown field \"base\" at the top level"));
}

#[test]
fn error_bad_colour_names_file_line_and_key() {
    let text = "# my theme\n\n[roles]\nok = \"green\"\n\ndropped = { fg = \"#ff00\" }\n";
    assert_eq!(
        patch_error_text(text),
        "~/.config/skymap/theme.toml:6: roles.dropped.fg: \"#ff00\" is not a colour \
         (expected #rrggbb, a name like bright-red, or 0-255)"
    );
    let err = patch(&dark(), "[roles.error]\nbg = 256", "f").expect_err("256");
    assert!(
        matches!(&err, ThemeError::Value { line: 2, key, .. } if key == "roles.error.bg"),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "f:2: roles.error.bg: 256 is not a colour (expected #rrggbb, a name like bright-red, or 0-255)"
    );
    assert!(
        patch_error_text("[roles]\nok = { fg = [1] }")
            .contains(":2: roles.ok.fg: an array is not a colour")
    );
    assert!(patch_error_text("[roles]\nok = -3").contains(":2: roles.ok: -3 is not a colour"));
}

#[test]
fn error_unknown_role_suggests() {
    let text = "[roles]\nok = \"green\"\ndroped = \"red\"\n";
    let err = patch(&dark(), text, "~/.config/skymap/theme.toml").expect_err("typo");
    assert!(
        matches!(
            &err,
            ThemeError::UnknownRole {
                line: 3,
                suggestion: Some("dropped"),
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "~/.config/skymap/theme.toml:3: unknown role \"droped\" (did you mean \"dropped\"?)"
    );
    assert_eq!(
        patch_error_text("[roles.zzz]"),
        "~/.config/skymap/theme.toml:1: unknown role \"zzz\""
    );
}

#[test]
fn error_unknown_field() {
    let text = "[roles]\n\nerror = { colour = \"red\" }\n";
    assert_eq!(
        patch_error_text(text),
        "~/.config/skymap/theme.toml:3: unknown field \"colour\" in roles.error \
         (expected fg, bg, bold, italic, underline, reversed, dim)"
    );
    assert_eq!(
        patch_error_text("nmae = \"x\""),
        "~/.config/skymap/theme.toml:1: unknown field \"nmae\" at the top level (expected name, base, roles)"
    );
    assert!(
        patch_error_text("[dropped]\nfg = \"red\"")
            .ends_with("styles go under [roles], as in [roles.dropped])")
    );
}

#[test]
fn error_wrong_type() {
    let text = "[roles.error]\nfg = \"red\"\nbold = \"yes\"\n";
    assert_eq!(
        patch_error_text(text),
        "~/.config/skymap/theme.toml:3: roles.error.bold: expected true or false, found \"yes\""
    );
    assert_eq!(
        patch_error_text("name = 5"),
        "~/.config/skymap/theme.toml:1: name: expected a string, found 5"
    );
    assert_eq!(
        patch_error_text("roles = \"all red\""),
        "~/.config/skymap/theme.toml:1: roles: expected a table of roles, found \"all red\""
    );
    assert!(patch_error_text("[roles]\nok = true").starts_with(
        "~/.config/skymap/theme.toml:2: roles.ok: expected a colour or a table like { fg = \"red\", bold = true }, found true"
    ));
}

#[test]
fn error_invalid_toml_has_line_and_column() {
    let err = patch(
        &dark(),
        "[roles]\nok = \"green\"\ndropped = { fg = \"red\"\n",
        "p.toml",
    )
    .expect_err("toml");
    let ThemeError::Toml {
        file,
        line,
        column,
        message,
    } = &err
    else {
        panic!("{err:?}");
    };
    assert_eq!((file.as_str(), *line), ("p.toml", 3));
    assert!(*column > 1, "{err}");
    assert!(!message.is_empty());
    assert!(err.to_string().starts_with("p.toml:3:"), "{err}");
    let err = patch(&dark(), "[roles]\nok = 1\nok = 2\n", "p.toml").expect_err("duplicate key");
    assert!(matches!(err, ThemeError::Toml { line: 3, .. }), "{err:?}");
}

#[test]
fn error_missing_role_in_full_theme() {
    let text = SHIPPED[0].1.replace("paused ", "# paused ");
    assert_eq!(
        error_text(&text),
        "t.toml: missing role \"paused\" (a complete theme defines every role)"
    );
}

#[test]
fn first_error_in_file_order() {
    // Alphabetically "audit" comes first, but the reader sees line 2 first.
    let text = "[roles]\nzz = \"red\"\naudit = \"nope\"\n";
    assert!(patch_error_text(text).contains(":2: unknown role \"zz\""));
}

#[test]
fn user_theme_path_follows_xdg() {
    let path = |vars: &[(&str, &str)]| user_theme_path(&env_of(vars));
    assert_eq!(
        path(&[("XDG_CONFIG_HOME", "/cfg"), ("HOME", "/home/u")]),
        Some(PathBuf::from("/cfg/skymap/theme.toml"))
    );
    assert_eq!(
        path(&[("HOME", "/home/u")]),
        Some(PathBuf::from("/home/u/.config/skymap/theme.toml"))
    );
    assert_eq!(
        path(&[("XDG_CONFIG_HOME", "relative"), ("HOME", "/home/u")]),
        Some(PathBuf::from("/home/u/.config/skymap/theme.toml"))
    );
    assert_eq!(path(&[("XDG_CONFIG_HOME", ""), ("HOME", "")]), None);
    assert_eq!(path(&[]), None);
}

/// A scratch directory under the system temp dir, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("skymap-themes-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join(".config/skymap")).expect("scratch dir");
        Scratch(dir)
    }

    fn home(&self) -> &str {
        self.0.to_str().expect("utf-8 temp dir")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn load_picks_builtin_user_patch_or_default() {
    let scratch = Scratch::new("load");
    let env = env_of(&[("HOME", scratch.home())]);
    assert_eq!(load(None, &env).expect("no file"), dark());
    assert_eq!(
        load(Some("light"), &env).expect("light"),
        builtin("light").expect("light")
    );
    let err = load(Some("hight-contrast"), &env).expect_err("unknown");
    assert_eq!(
        err.to_string(),
        "unknown theme \"hight-contrast\" (did you mean \"high-contrast\"?) (built-in themes: dark, light, high-contrast)"
    );

    let file = scratch.0.join(".config/skymap/theme.toml");
    std::fs::write(&file, "[roles]\ndropped = \"#ff0000\"\n").expect("write");
    let theme = load(None, &env).expect("user patch");
    assert_eq!(theme.style(Role::Dropped).fg, Some(Color::Rgb(255, 0, 0)));
    assert_eq!(theme.style(Role::Text), dark().style(Role::Text));
    // A named builtin ignores the user's patch.
    assert_eq!(load(Some("dark"), &env).expect("dark"), dark());

    std::fs::write(&file, "[roles]\n\n\ndropped = { fg = \"#ff00\" }\n").expect("write");
    let err = load(None, &env).expect_err("broken");
    assert!(
        err.to_string()
            .starts_with("~/.config/skymap/theme.toml:4: roles.dropped.fg: \"#ff00\""),
        "{err}"
    );

    let explicit = scratch.0.join("mine.toml");
    std::fs::write(&explicit, "base = \"high-contrast\"\n").expect("write");
    let theme = load(explicit.to_str(), &env).expect("explicit file");
    assert_eq!(theme, builtin("high-contrast").expect("hc"));
    let missing = scratch.0.join("missing.toml");
    let err = load(missing.to_str(), &env).expect_err("missing file");
    assert!(
        matches!(&err, ThemeError::Io { path, .. } if path == "~/missing.toml"),
        "{err:?}"
    );

    // XDG_CONFIG_HOME wins over HOME.
    let xdg = scratch.0.join("xdg");
    std::fs::create_dir_all(xdg.join("skymap")).expect("xdg dir");
    std::fs::write(xdg.join("skymap/theme.toml"), "base = \"light\"").expect("write");
    let env = env_of(&[
        ("HOME", scratch.home()),
        ("XDG_CONFIG_HOME", xdg.to_str().expect("utf-8")),
    ]);
    assert_eq!(
        load(None, &env).expect("xdg"),
        builtin("light").expect("light")
    );
}

/// xorshift64*, so the fuzz test is repeatable without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn try_all(base: &Theme, text: &str) {
    let _ = parse(text, "fuzz").map(|t| t.degrade(ColorDepth::Ansi16));
    let _ = patch(base, text, "fuzz").map(|t| t.degrade(ColorDepth::None));
    if let Err(err) = parse(text, "fuzz") {
        assert!(err.to_string().starts_with("fuzz"), "{err}");
    }
}

#[test]
fn hostile_input_never_panics() {
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let base = dark();
    let valid = SHIPPED[0].1;
    // Every truncation, at byte positions that are char boundaries.
    for end in (0..=valid.len()).filter(|&i| valid.is_char_boundary(i)) {
        try_all(&base, &valid[..end]);
    }
    // Random single-byte mutations and splices of the valid theme.
    let alphabet = b"[]{}=\",.#\n 0123456789abcdefxyz-_'\\\t\r\x00\xff";
    for _ in 0..3000 {
        let mut bytes = valid.as_bytes().to_vec();
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(bytes.len());
            match rng.below(3) {
                0 => bytes[at] = alphabet[rng.below(alphabet.len())],
                1 => {
                    bytes.remove(at);
                }
                _ => bytes.insert(at, alphabet[rng.below(alphabet.len())]),
            }
        }
        try_all(&base, &String::from_utf8_lossy(&bytes));
    }
    // Pure noise, and noise built from TOML-ish tokens.
    let tokens = [
        "[roles]",
        "[roles.dropped]",
        "\n",
        "=",
        "\"",
        "{",
        "}",
        "fg",
        "bg",
        "bold",
        "true",
        "300",
        "-1",
        "\"#ff00\"",
        "\"red\"",
        "name",
        "base",
        "\"light\"",
        ",",
        "[[roles]]",
        "0x1ff",
        "1e9",
        "1979-05-27",
        "dropped",
        "roles",
        ".",
        "'",
        "\"\"\"",
    ];
    for _ in 0..3000 {
        let noise: Vec<u8> = (0..rng.below(200)).map(|_| rng.next() as u8).collect();
        try_all(&base, &String::from_utf8_lossy(&noise));
        let soup: String = (0..rng.below(40))
            .map(|_| tokens[rng.below(tokens.len())])
            .collect::<Vec<_>>()
            .join(" ");
        try_all(&base, &soup);
    }
}
