//! Unit tests of [`super`]: packing, limits on both sides, and copying a
//! tree on the host (hostile streams are in `extract_tests.rs`).
use super::*;

#[test]
fn limits_stop_the_unpacking() {
    let src = tempfile::tempdir().unwrap();
    for i in 0..5 {
        fs::write(src.path().join(format!("f{i}")), vec![7u8; 1000]).unwrap();
    }
    fs::create_dir_all(src.path().join("a/b/c")).unwrap();
    let none = BTreeSet::new();
    let mut tar = Vec::new();
    pack(
        src.path(),
        ".claude",
        &mut tar,
        (0, 0),
        &Limits::default(),
        &none,
        &[],
    )
    .unwrap();
    let try_with = |l: Limits| {
        let d = tempfile::tempdir().unwrap();
        extract(&tar[..], ".claude", d.path(), &l, &[])
    };
    let base = Limits::default();
    assert!(try_with(base).is_ok());
    let e = try_with(Limits {
        max_bytes: 4000,
        ..base
    })
    .unwrap_err();
    assert!(matches!(e, ArchiveError::TooBig { limit: 4000 }), "{e}");
    let e = try_with(Limits {
        max_files: 3,
        ..base
    })
    .unwrap_err();
    assert!(matches!(e, ArchiveError::TooManyFiles { .. }), "{e}");
    let e = try_with(Limits {
        max_depth: 2,
        ..base
    })
    .unwrap_err();
    assert!(matches!(e, ArchiveError::TooDeep { .. }), "{e}");
    // Packing checks the same limits.
    let e = pack(
        src.path(),
        ".claude",
        io::sink(),
        (0, 0),
        &Limits {
            max_bytes: 10,
            ..base
        },
        &none,
        &[],
    )
    .unwrap_err();
    assert!(matches!(e, ArchiveError::TooBig { .. }));
}

#[test]
fn pack_never_follows_symlinks_and_round_trips() {
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("secret"), b"host secret").unwrap();
    let src = tempfile::tempdir().unwrap();
    let s = src.path();
    fs::create_dir_all(s.join("projects/p")).unwrap();
    fs::write(s.join("projects/p/log.jsonl"), b"{}\n").unwrap();
    fs::write(s.join("hook.sh"), b"#!/bin/sh\n").unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret"), s.join("abs")).unwrap();
    std::os::unix::fs::symlink(outside.path(), s.join("dirlink")).unwrap();
    std::os::unix::fs::symlink("projects/p/log.jsonl", s.join("latest")).unwrap();
    let exec: BTreeSet<String> = ["hook.sh".to_string()].into();
    let dest = tempfile::tempdir().unwrap();
    let copy = dest.path().join("copy");
    let t = copy_tree(s, &copy, &Limits::default(), &exec, &[]).unwrap();
    assert_eq!(
        fs::read(copy.join("projects/p/log.jsonl")).unwrap(),
        b"{}\n"
    );
    assert_eq!(
        fs::read_link(copy.join("latest")).unwrap(),
        Path::new("projects/p/log.jsonl")
    );
    assert!(fs::symlink_metadata(copy.join("abs")).is_err());
    assert!(fs::symlink_metadata(copy.join("dirlink")).is_err());
    assert!(t.executables.contains("hook.sh"));
    let mut tar = Vec::new();
    pack(
        &copy,
        ".claude",
        &mut tar,
        (1000, 1000),
        &Limits::default(),
        &exec,
        &[],
    )
    .unwrap();
    let mut a = tar::Archive::new(&tar[..]);
    for e in a.entries().unwrap() {
        let e = e.unwrap();
        let path = e.path().unwrap().into_owned();
        assert!(path.starts_with(".claude"), "{path:?}");
        assert_eq!(e.header().uid().unwrap(), 1000);
        let m = e.header().mode().unwrap();
        if path.ends_with("hook.sh") {
            assert_eq!(m, 0o700);
        } else if e.header().entry_type().is_file() {
            assert_eq!(m, 0o600);
        }
    }
}

#[test]
fn the_stream_is_read_to_its_end_past_the_archive() {
    let src = tempfile::tempdir().unwrap();
    fs::write(src.path().join("f"), b"x").unwrap();
    let mut tar = Vec::new();
    pack(
        src.path(),
        ".claude",
        &mut tar,
        (0, 0),
        &Limits::default(),
        &BTreeSet::new(),
        &[],
    )
    .unwrap();
    // GNU tar pads its output to a whole record after the end marker: a
    // writer still sending that must find its reader there.
    tar.extend(vec![0u8; 9216]);
    let mut stream = std::io::Cursor::new(&tar);
    let d = tempfile::tempdir().unwrap();
    extract(&mut stream, ".claude", d.path(), &Limits::default(), &[]).unwrap();
    assert_eq!(stream.position(), tar.len() as u64);
    assert!(d.path().join("f").exists());
}
