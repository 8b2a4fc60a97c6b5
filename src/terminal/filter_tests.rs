use proptest::prelude::*;

use super::*;

fn f(s: &str) -> String {
    String::from_utf8(filter_all(s.as_bytes())).unwrap()
}

/// Filtered one byte at a time.
fn bytewise(input: &[u8]) -> Vec<u8> {
    let mut filter = EscapeFilter::new();
    let mut out = Vec::new();
    for b in input {
        filter.push(std::slice::from_ref(b), &mut out);
    }
    out
}

#[test]
fn text_colours_cursor_and_titles_pass() {
    for s in [
        "plain text\r\n",
        "tab\there, bell\x07, backspace\x08",
        "\x1b[31mred\x1b[0m \x1b[1;38;5;208mbold orange\x1b[m",
        "\x1b[38;2;10;20;30mtrue colour",
        "\x1b[H\x1b[2J\x1b[10;20H\x1b[K\x1b[?25l\x1b[?1049h\x1b[?2004h",
        "\x1b[2 q\x1b[>4;1m\x1b(0lqk\x1b(B\x1b7\x1b8\x1bM\x1b=\x1b>",
        "\x1b]0;my title\x07",
        "\x1b]2;title with ST\x1b\\",
        "\x1b]12;rgb:ff/00/00\x07\x1b]112\x07",
        "ünïcødé ✓ 日本語 🦀",
        "\x1bc",
    ] {
        assert_eq!(f(s), s, "{s:?}");
    }
}

#[test]
fn clipboard_links_strings_and_reports_are_dropped() {
    for (s, want) in [
        ("a\x1b]52;c;cm0gLXJmIH4K\x07b", "ab"),
        ("a\x1b]52;c;cm0gLXJmIH4K\x1b\\b", "ab"),
        ("a\x1b]52;c;?\x07b", "ab"),
        (
            "\x1b]8;;https://evil.example/\x1b\\click\x1b]8;;\x1b\\",
            "click",
        ),
        ("\x1b]7;file://host/etc\x07x", "x"),
        (
            "\x1b]9;notify\x07\x1b]777;notify;a;b\x07\x1b]1337;File=x\x07x",
            "x",
        ),
        ("\x1b]11;?\x07\x1b]4;1;?\x07\x1b]10;?\x1b\\x", "x"),
        ("a\x1bP$qm\x1b\\b", "ab"),
        ("a\x1bPtmux;\x1b\x1b]52;c;eA==\x07\x1b\\b", "ab"),
        (
            "a\x1b_Gf=100;AAAA\x1b\\b\x1b^pm\x1b\\c\x1bXsos\x1b\\d",
            "abcd",
        ),
        ("\x1b[6n\x1b[5n\x1b[?6n\x1b[c\x1b[>c\x1b[=c\x1b[0cx", "x"),
        ("\x1b[21t\x1b[20t\x1b[14t\x1b[8;1;1tx", "x"),
        (
            "\x1b[?2004$p\x1b[4$p\x1b[>q\x1b[?u\x1b[1;1;1;1*y\x1b[5ix",
            "x",
        ),
        ("\x1bZ\x05x\x00y", "xy"),
        // Titles may not carry controls or C1 characters.
        ("\x1b]0;a\x08b\x07x", "x"),
        ("\x1b]0;a\u{9b}31m\x07x", "x"),
        // 8-bit and UTF-8 encoded C1 controls.
        ("a\u{9b}6n\u{9d}52;c;x\u{9c}b", "a6n52;c;xb"),
    ] {
        assert_eq!(f(s), want, "{s:?}");
    }
    assert_eq!(
        filter_all(b"a\x9b6n\x9d52;c;x\x07b\x90q\x9c"),
        b"a6n52;c;x\x07bq"
    );
}

#[test]
fn invalid_utf8_is_dropped() {
    // Overlong forms of CSI (U+009B) and ESC, a surrogate, stray bytes.
    assert_eq!(
        filter_all(b"a\xc0\x9b\xe0\x82\x9b\xed\xa0\x80\xff\x80b"),
        b"ab"
    );
    // A character cut short by another byte.
    assert_eq!(filter_all(b"a\xe2\x9cb\xe2\x9c\x93"), "ab✓".as_bytes());
}

#[test]
fn sequences_split_across_reads_are_held_then_judged() {
    let mut filter = EscapeFilter::new();
    let mut out = Vec::new();
    filter.push(b"red \x1b[3", &mut out);
    assert_eq!(out, b"red ");
    filter.push(b"1mX \x1b]5", &mut out);
    filter.push(b"2;c;AAAA", &mut out);
    filter.push(b"\x1b", &mut out);
    filter.push(b"\\ok \xe2\x9c", &mut out);
    filter.push(b"\x93", &mut out);
    assert_eq!(String::from_utf8(out).unwrap(), "red \x1b[31mX ok ✓");
}

#[test]
fn held_bytes_stay_bounded() {
    let mut filter = EscapeFilter::new();
    let mut out = Vec::new();
    filter.push(b"\x1b]0;", &mut out);
    filter.push(&vec![b'a'; 100_000], &mut out);
    assert!(filter.held() <= MAX_OSC + 2, "{}", filter.held());
    filter.push(b"\x07after", &mut out);
    assert_eq!(out, b"after");
    filter.push(b"\x1b[", &mut out);
    filter.push(&vec![b'1'; 100_000], &mut out);
    assert!(filter.held() <= MAX_CSI + 1);
    filter.push(b"mafter", &mut out);
    assert_eq!(out, b"afterafter");
    filter.push(b"\x1bP", &mut out);
    filter.push(&vec![b'q'; 100_000], &mut out);
    assert_eq!(filter.held(), 0);
}

#[test]
fn capture_text_keeps_only_newlines_and_tabs() {
    assert_eq!(
        strip_controls("a\x1b]52;c;eA==\x07b\tc\r\nd\u{9b}e"),
        "a]52;c;eA==b\tc\nde"
    );
    assert_eq!(printable_lines("x\x1b[31m\ny\tz"), "x\\u{1b}[31m\ny\tz");
}

/// Pieces a hostile program would print, for the generated streams below.
fn piece() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..8),
        "[ -~]{0,10}".prop_map(String::into_bytes),
        Just(b"\x1b]52;c;cm0gLXJm\x07".to_vec()),
        Just(b"\x1b]8;;http://x/\x1b\\".to_vec()),
        Just(b"\x1bP$qm\x1b\\".to_vec()),
        Just(b"\x1b_APC\x1b\\".to_vec()),
        Just(b"\x1b[6n".to_vec()),
        Just(b"\x1b[31m".to_vec()),
        Just(b"\x1b]0;title\x07".to_vec()),
        Just(b"\x1b".to_vec()),
        Just(b"\x1b]".to_vec()),
        Just(b"\x1b\\".to_vec()),
        Just(b"\x07".to_vec()),
        Just("\u{9d}".as_bytes().to_vec()),
        Just("✓".as_bytes().to_vec()),
    ]
}

/// Whether `out` holds something the filter promises never to let through.
fn forbidden(out: &[u8]) -> Option<String> {
    for (i, w) in out.windows(2).enumerate() {
        let rest = &out[i..];
        match w {
            [0x1b, b'P' | b'X' | b'^' | b'_' | b'Z'] => return Some(format!("string at {i}")),
            [0x1b, b']'] => {
                let n: Vec<u8> = rest[2..]
                    .iter()
                    .copied()
                    .take_while(u8::is_ascii_digit)
                    .collect();
                if !matches!(n.as_slice(), b"0" | b"1" | b"2" | b"12" | b"112") {
                    return Some(format!("OSC {:?} at {i}", String::from_utf8_lossy(&n)));
                }
            }
            [0xc2, 0x80..=0x9f] => return Some(format!("C1 at {i}")),
            _ => {}
        }
    }
    if out
        .iter()
        .any(|&b| matches!(b, 0x00..=0x06 | 0x10..=0x1a | 0x1c..=0x1f))
    {
        return Some("C0".into());
    }
    if std::str::from_utf8(out).is_err() {
        return Some("invalid UTF-8".into());
    }
    None
}

proptest! {
    #[test]
    fn splitting_never_changes_the_output(
        pieces in prop::collection::vec(piece(), 0..24),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let input: Vec<u8> = pieces.concat();
        let whole = filter_all(&input);
        prop_assert_eq!(&bytewise(&input), &whole);
        let mut at: Vec<usize> = cuts.iter().map(|c| c.index(input.len() + 1)).collect();
        at.sort_unstable();
        let mut filter = EscapeFilter::new();
        let mut out = Vec::new();
        let mut from = 0;
        for to in at.into_iter().chain([input.len()]) {
            filter.push(&input[from..to], &mut out);
            from = to;
        }
        prop_assert_eq!(out, whole);
    }

    #[test]
    fn nothing_forbidden_gets_through_and_filtering_twice_changes_nothing(
        pieces in prop::collection::vec(piece(), 0..24),
    ) {
        let out = filter_all(&pieces.concat());
        prop_assert_eq!(forbidden(&out), None, "{:?}", String::from_utf8_lossy(&out));
        prop_assert_eq!(filter_all(&out), out);
    }
}

#[test]
fn bidirectional_and_zero_width_characters_are_shown_or_dropped() {
    let s = "ok\u{202e}txt.exe\u{200b}!";
    assert_eq!(strip_controls(s), "oktxt.exe!");
    assert_eq!(printable(s), "ok\\u{202e}txt.exe\\u{200b}!");
    assert_eq!(printable("ü ñ 日本"), "ü ñ 日本");
}
