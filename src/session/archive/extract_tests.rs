//! Unit tests of [`super`]: hostile streams built in memory.
use super::*;

/// A tar stream with hostile entries, built header by header.
fn hostile() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |kind: tar::EntryType, path: &[u8], link: &[u8], data: &[u8], mode: u32| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(data.len() as u64);
        // Raw names: the builder's own checks would refuse some of these.
        let name = &mut h.as_old_mut().name;
        name[..path.len()].copy_from_slice(path);
        if !link.is_empty() {
            let l = &mut h.as_old_mut().linkname;
            l[..link.len()].copy_from_slice(link);
        }
        h.set_cksum();
        b.append(&h, data).unwrap();
    };
    use tar::EntryType as T;
    add(T::Directory, b".claude/", b"", b"", 0o755);
    add(T::Regular, b".claude/ok.txt", b"", b"fine", 0o644);
    add(T::Regular, b".claude/run.sh", b"", b"#!/bin/sh", 0o4755);
    add(T::Regular, b"../../escape", b"", b"x", 0o644);
    add(T::Regular, b"/etc/abs", b"", b"x", 0o644);
    add(T::Regular, b".claude/../../up", b"", b"x", 0o644);
    add(T::Regular, b"other/file", b"", b"x", 0o644);
    add(T::Symlink, b".claude/abs", b"/etc/passwd", b"", 0o777);
    add(T::Symlink, b".claude/updir", b"../..", b"", 0o777);
    add(T::Symlink, b".claude/dangling", b"nothere", b"", 0o777);
    add(T::Symlink, b".claude/dir", b"/tmp", b"", 0o777);
    // Written through the symlink if it were made first.
    add(T::Regular, b".claude/dir/through", b"", b"x", 0o644);
    add(T::Fifo, b".claude/fifo", b"", b"", 0o644);
    add(T::Char, b".claude/null", b"", b"", 0o644);
    add(
        T::Regular,
        b".claude/new\nline\x1b[31m\xff",
        b"",
        b"odd",
        0o644,
    );
    add(
        T::Regular,
        b".claude/.credentials.json",
        b"",
        b"secret",
        0o600,
    );
    b.into_inner().unwrap()
}

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn hostile_entries_stay_inside_and_are_private() {
    let d = tempfile::tempdir().unwrap();
    let dest = d.path().join("state");
    fs::create_dir(&dest).unwrap();
    let t = extract(
        &hostile()[..],
        ".claude",
        &dest,
        &Limits::default(),
        &[".credentials.json"],
    )
    .unwrap();
    assert_eq!(fs::read(dest.join("ok.txt")).unwrap(), b"fine");
    assert_eq!(mode(&dest.join("ok.txt")), 0o600);
    assert_eq!(mode(&dest.join("run.sh")), 0o600, "setuid stripped");
    assert!(t.executables.contains("run.sh"));
    assert!(!d.path().join("escape").exists() && !d.path().join("up").exists());
    assert!(!dest.join("abs").exists() && fs::symlink_metadata(dest.join("abs")).is_err());
    assert!(fs::symlink_metadata(dest.join("updir")).is_err());
    assert_eq!(
        fs::read_link(dest.join("dangling")).unwrap(),
        Path::new("nothere")
    );
    // The file under "dir" went into a real folder, never through /tmp.
    assert!(fs::symlink_metadata(dest.join("dir")).unwrap().is_dir());
    assert_eq!(mode(&dest.join("dir")), 0o700);
    assert!(!Path::new("/tmp/through").exists());
    assert!(fs::symlink_metadata(dest.join("fifo")).is_err());
    assert!(fs::symlink_metadata(dest.join("null")).is_err());
    assert!(!dest.join(".credentials.json").exists());
    let odd = dest.join(OsStr::from_bytes(b"new\nline\x1b[31m\xff"));
    assert_eq!(fs::read(odd).unwrap(), b"odd");
    assert!(t.skipped_count >= 8, "{t:?}");
    for note in &t.skipped {
        assert!(!note.contains('\n') && !note.contains('\x1b'), "{note}");
    }
}

/// One raw entry (header, then `data` padded to a block).
fn entry(out: &mut Vec<u8>, kind: tar::EntryType, path: &[u8], link: &[u8], data: &[u8]) {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    h.as_old_mut().name[..path.len()].copy_from_slice(path);
    h.as_old_mut().linkname[..link.len()].copy_from_slice(link);
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    out.resize(out.len().next_multiple_of(512), 0);
}

fn unpack(tar: &[u8], l: Limits) -> (tempfile::TempDir, Result<Tally, ArchiveError>) {
    let d = tempfile::tempdir().unwrap();
    let dest = d.path().join("state");
    fs::create_dir(&dest).unwrap();
    let r = extract(tar, ".claude", &dest, &l, &[]);
    (d, r)
}

fn small() -> Limits {
    Limits {
        max_files: 50,
        ..Limits::default()
    }
}

#[test]
fn implicit_parent_folders_count_against_the_file_limit() {
    use tar::EntryType as T;
    let mut tar = Vec::new();
    // Each entry makes 9 folders before its link is refused.
    for i in 0..10 {
        let p = format!(".claude/e{i}/a/a/a/a/a/a/a/a/link");
        entry(&mut tar, T::Symlink, p.as_bytes(), b"/abs", b"");
    }
    // The refused links make no folders at all (checked first).
    let (d, r) = unpack(&tar, small());
    assert_eq!(r.unwrap().entries, 0);
    assert!(!d.path().join("state/e0").exists());
    // Kept entries' parents count too.
    let mut tar = Vec::new();
    for i in 0..10 {
        let p = format!(".claude/f{i}/a/a/a/a/a/a/a/a/file");
        entry(&mut tar, T::Regular, p.as_bytes(), b"", b"x");
    }
    let (_, r) = unpack(&tar, small());
    assert!(matches!(r, Err(ArchiveError::TooManyFiles { .. })), "{r:?}");
    drop(d);
}

#[test]
fn skipped_entries_count_against_the_file_limit() {
    use tar::EntryType as T;
    let mut tar = Vec::new();
    for i in 0..60 {
        match i % 3 {
            0 => entry(
                &mut tar,
                T::Fifo,
                format!(".claude/p{i}").as_bytes(),
                b"",
                b"",
            ),
            1 => entry(
                &mut tar,
                T::Regular,
                format!("other/{i}").as_bytes(),
                b"",
                b"",
            ),
            _ => entry(
                &mut tar,
                T::Symlink,
                format!(".claude/s{i}").as_bytes(),
                b"/x",
                b"",
            ),
        }
    }
    let (_, r) = unpack(&tar, small());
    assert!(
        matches!(r, Err(ArchiveError::TooManyFiles { limit: 50 })),
        "{r:?}"
    );
    let (_, r) = unpack(&tar[..512 * 40], small());
    assert_eq!(r.unwrap().skipped_count, 40);
}

#[test]
fn the_whole_stream_is_capped_not_only_what_is_kept() {
    use tar::EntryType as T;
    let l = Limits {
        max_bytes: 1000,
        max_files: 10,
        max_depth: 8,
        ..Limits::default()
    };
    let mut tar = Vec::new();
    // Data of entries left out is read but never kept.
    entry(
        &mut tar,
        T::Regular,
        b"other/big",
        b"",
        &vec![7u8; 2_000_000],
    );
    let (_, r) = unpack(&tar, l);
    let cap = l.max_stream();
    assert!(cap < 2_000_000);
    assert!(
        matches!(r, Err(ArchiveError::StreamTooLong { limit }) if limit == cap),
        "{r:?}"
    );
    let mut ok = Vec::new();
    entry(&mut ok, T::Regular, b"other/small", b"", &vec![7u8; 1000]);
    assert!(unpack(&ok, l).1.is_ok());
}

#[test]
fn long_name_and_pax_payloads_are_capped_before_reading() {
    use tar::EntryType as T;
    let big = vec![b'a'; (tarstream::MAX_EXTENSION + 1) as usize];
    for kind in [T::GNULongName, T::GNULongLink, T::XHeader, T::XGlobalHeader] {
        let mut tar = Vec::new();
        entry(&mut tar, kind, b"././@LongLink", b"", &big);
        entry(&mut tar, T::Regular, b".claude/f", b"", b"x");
        let e = unpack(&tar, Limits::default()).1.unwrap_err();
        assert!(e.to_string().contains("long-name or PAX"), "{kind:?}: {e}");
    }
    // Long names within the cap still work, GNU and PAX alike.
    let long = format!(".claude/{}", "n".repeat(200));
    let mut tar = Vec::new();
    entry(
        &mut tar,
        T::GNULongName,
        b"././@LongLink",
        b"",
        long.as_bytes(),
    );
    entry(&mut tar, T::Regular, b"trunc", b"", b"gnu");
    let pax_rec = |k: &str, v: &str| {
        let body = format!(" {k}={v}\n");
        let mut n = body.len() + 1;
        while format!("{n}{body}").len() != n {
            n += 1;
        }
        format!("{n}{body}")
    };
    let rec = pax_rec("path", ".claude/pax-name") + &pax_rec("linkpath", "target");
    entry(&mut tar, T::XHeader, b"pax", b"", rec.as_bytes());
    entry(&mut tar, T::Symlink, b"ignored", b"ignored", b"");
    let (d, r) = unpack(&tar, Limits::default());
    let t = r.unwrap();
    assert_eq!(
        fs::read(d.path().join("state").join("n".repeat(200))).unwrap(),
        b"gnu"
    );
    assert_eq!(
        fs::read_link(d.path().join("state/pax-name")).unwrap(),
        Path::new("target")
    );
    assert_eq!(t.entries, 2);
}

#[test]
fn chained_symlinks_resolving_outside_are_refused() {
    use tar::EntryType as T;
    let mut tar = Vec::new();
    entry(&mut tar, T::Directory, b".claude/d", b"", b"");
    entry(&mut tar, T::Symlink, b".claude/d/l", b"..", b"");
    entry(&mut tar, T::Symlink, b".claude/x", b"d/l/d/l/../../..", b"");
    entry(&mut tar, T::Symlink, b".claude/fine", b"d/l/d", b"");
    let (d, r) = unpack(&tar, Limits::default());
    let t = r.unwrap();
    let s = d.path().join("state");
    assert_eq!(fs::read_link(s.join("d/l")).unwrap(), Path::new(".."));
    assert_eq!(fs::read_link(s.join("fine")).unwrap(), Path::new("d/l/d"));
    assert!(fs::symlink_metadata(s.join("x")).is_err());
    assert!(t.skipped.iter().any(|n| n.contains("\"x\"")), "{t:?}");
    assert_eq!(t.entries, 3);
}
