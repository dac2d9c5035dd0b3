//! Value objects parse raw input once and refuse what the rules refuse.

use domain::{CommentText, Message, UserId};

#[test]
fn message_length_is_counted_in_characters_after_trimming() {
    assert!(Message::parse(&"a".repeat(2_000)).is_ok());
    assert!(Message::parse(&"a".repeat(2_001)).is_err());
    // 2,000 emoji are 8,000 bytes but 2,000 characters.
    assert!(Message::parse(&"😀".repeat(2_000)).is_ok());
    assert!(Message::parse(&"é".repeat(2_001)).is_err());
    assert!(
        Message::parse(&format!("  {}  ", "a".repeat(2_000))).is_ok(),
        "surrounding spaces do not count"
    );
    assert_eq!(Message::parse("  hi\n").expect("valid").as_str(), "hi");
    for empty in ["", " ", "\n\t "] {
        assert!(Message::parse(empty).is_err(), "{empty:?}");
    }
}

#[test]
fn control_characters_are_refused_but_newline_and_tab_accepted() {
    assert!(Message::parse("line one\nline\ttwo").is_ok());
    for bad in [
        "bell\u{7}",
        "nul\u{0}x",
        "esc\u{1b}[31m",
        "del\u{7f}",
        "cr\rx",
        "c1\u{85}x",
    ] {
        assert!(Message::parse(bad).is_err(), "{bad:?}");
        assert!(CommentText::parse(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn any_script_is_accepted() {
    for ok in [
        "مرحبا بالعالم",
        "שלום עולם",
        "こんにちは",
        "Ünïcödé 👍🏽",
        "'); DROP TABLE posts; --",
    ] {
        assert_eq!(Message::parse(ok).expect("valid").as_str(), ok);
        assert_eq!(CommentText::parse(ok).expect("valid").as_str(), ok);
    }
}

#[test]
fn comment_text_is_one_to_a_thousand_characters() {
    assert!(CommentText::parse(&"b".repeat(1_000)).is_ok());
    assert!(CommentText::parse(&"b".repeat(1_001)).is_err());
    assert!(CommentText::parse(&"😀".repeat(1_000)).is_ok());
    assert!(CommentText::parse("   ").is_err());
}

#[test]
fn user_ids_are_1_to_64_of_a_small_charset() {
    for ok in ["a", "alice", "Bob_99", "first.last", "x-y", &"u".repeat(64)] {
        assert!(UserId::parse(ok).is_ok(), "{ok:?}");
    }
    let too_long = "u".repeat(65);
    for bad in [
        "",
        too_long.as_str(),
        "al ice",
        "a@b",
        "é",
        "a/b",
        "a:b",
        "a~b",
        "😀",
    ] {
        assert!(UserId::parse(bad).is_err(), "{bad:?}");
    }
}
