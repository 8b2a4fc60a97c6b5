//! Files through the REST client: write/read with mode and owner, mkdir,
//! symlinks, delete, and recursive push and pull of a tree.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use cci::incus::{FileKind, FileWrite};
use common::TestInstance;

#[tokio::test(flavor = "multi_thread")]
async fn files_write_read_stat_mkdir_symlink_delete() {
    let inst = TestInstance::running("files").await;
    let (c, n) = (&inst.client, inst.name.as_str());

    let how = FileWrite {
        uid: 1000,
        gid: 1001,
        mode: 0o640,
    };
    c.write_file(n, "/tmp/hello.txt", "hello\n", how)
        .await
        .unwrap();
    let (info, body) = c.read_file(n, "/tmp/hello.txt").await.unwrap();
    assert_eq!(body, b"hello\n");
    assert_eq!(
        (info.kind, info.uid, info.gid, info.mode),
        (FileKind::File, 1000, 1001, 0o640)
    );

    // The container agrees on owner and mode.
    let out = c
        .exec_capture(
            n,
            &cci::incus::ExecRequest::new(&["stat", "-c", "%u %g %a", "/tmp/hello.txt"]),
            None,
        )
        .await
        .unwrap();
    assert_eq!(out.stdout_text(), "1000 1001 640\n");

    c.mkdir_all(n, "/tmp/a/b/c", FileWrite::mode(0o750))
        .await
        .unwrap();
    let st = c.stat_file(n, "/tmp/a/b/c").await.unwrap();
    assert_eq!((st.kind, st.mode), (FileKind::Directory, 0o750));
    c.mkdir(n, "/tmp/a", FileWrite::mode(0o750)).await.unwrap(); // existing is fine

    c.symlink(n, "/tmp/link", "/tmp/hello.txt", FileWrite::mode(0o777))
        .await
        .unwrap();
    assert_eq!(
        c.stat_file(n, "/tmp/link").await.unwrap().kind,
        FileKind::Symlink
    );
    let (_, target) = c.read_file(n, "/tmp/link").await.unwrap();
    assert_eq!(target, b"/tmp/hello.txt");

    let mut names = c.list_dir(n, "/tmp/a").await.unwrap();
    names.sort();
    assert_eq!(names, ["b"]);

    c.delete_file(n, "/tmp/hello.txt").await.unwrap();
    assert!(
        c.stat_file(n, "/tmp/hello.txt")
            .await
            .unwrap_err()
            .is_not_found()
    );
    assert!(
        c.read_file(n, "/tmp/hello.txt")
            .await
            .unwrap_err()
            .is_not_found()
    );
    // Writing below a missing folder fails instead of inventing parents.
    assert!(
        c.write_file(n, "/tmp/none/x", "x", FileWrite::mode(0o644))
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn push_and_pull_a_tree_with_nested_folders_and_a_symlink() {
    let inst = TestInstance::running("tree").await;
    let (c, n) = (&inst.client, inst.name.as_str());
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(src.join("deep/er")).unwrap();
    std::fs::write(src.join("top.txt"), "top").unwrap();
    std::fs::write(src.join("deep/er/run.sh"), "#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(
        src.join("deep/er/run.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::os::unix::fs::symlink("deep/er/run.sh", src.join("link")).unwrap();

    c.push_tree(n, &src, "/srv/tree", Some((1000, 1000)))
        .await
        .unwrap();
    let out = c
        .exec_capture(n, &cci::incus::ExecRequest::new(&["sh", "-c",
            "cd /srv/tree && cat top.txt && ./link && stat -c '%u %a' deep/er/run.sh && readlink link"]), None)
        .await
        .unwrap();
    assert_eq!(out.stdout_text(), "tophi\n1000 755\ndeep/er/run.sh\n");

    // Add hostile entries inside the container before pulling back.
    let hostile = "ln -s /etc/shadow /srv/tree/shadow; ln -s ../../../../etc /srv/tree/up; \
                   cp /bin/true /srv/tree/suid && chmod 4755 /srv/tree/suid; mkfifo /srv/tree/fifo";
    let r = c
        .exec_capture(
            n,
            &cci::incus::ExecRequest::new(&["sh", "-c", hostile]),
            None,
        )
        .await
        .unwrap();
    assert_eq!(r.exit_code, 0, "{}", String::from_utf8_lossy(&r.stderr));

    let dst = tmp.path().join("pulled");
    c.pull_tree(n, "/srv/tree", &dst).await.unwrap();
    assert_eq!(std::fs::read_to_string(dst.join("top.txt")).unwrap(), "top");
    assert_eq!(
        std::fs::read_to_string(dst.join("deep/er/run.sh")).unwrap(),
        "#!/bin/sh\necho hi\n"
    );
    let mode = std::fs::metadata(dst.join("deep/er/run.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);
    // Symlinks inside the tree come back as relative symlinks; those pointing
    // outside it (absolute or via `..`) are left out, never followed.
    assert_eq!(
        std::fs::read_link(dst.join("link")).unwrap().to_str(),
        Some("deep/er/run.sh")
    );
    assert!(std::fs::symlink_metadata(dst.join("shadow")).is_err());
    assert!(std::fs::symlink_metadata(dst.join("up")).is_err());
    // setuid stripped; the FIFO neither blocks the pull nor comes back as a FIFO.
    let suid = std::fs::metadata(dst.join("suid")).unwrap();
    assert_eq!(suid.mode() & 0o7000, 0);
    assert_eq!(
        std::fs::read(dst.join("suid")).unwrap().len() as u64,
        suid.len()
    );
    assert!(suid.len() > 1000);
    let fifo = std::fs::symlink_metadata(dst.join("fifo")).unwrap();
    assert!(fifo.file_type().is_file() && fifo.len() == 0);

    // Pulling onto an existing path is refused rather than merged.
    assert!(c.pull_tree(n, "/srv/tree", &dst).await.is_err());
}
