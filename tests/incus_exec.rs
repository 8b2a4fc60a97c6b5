//! Exec through the REST client: streams, exit codes, identity, recorded output.

mod common;

use std::time::Duration;

use cci::incus::{Error, ExecRequest};
use common::TestInstance;

#[tokio::test(flavor = "multi_thread")]
async fn exec_streams_stdin_stdout_stderr_and_exit_codes() {
    let inst = TestInstance::running("exec").await;
    let c = &inst.client;

    let req = ExecRequest::new(&["sh", "-c", "cat; echo to-err >&2; exit 7"]);
    let out = c
        .exec_capture(&inst.name, &req, Some(b"from stdin\n".as_slice()))
        .await
        .unwrap();
    assert_eq!(out.stdout, b"from stdin\n");
    assert_eq!(out.stderr, b"to-err\n");
    assert_eq!(out.exit_code, 7);

    let ok = c
        .exec_capture(&inst.name, &ExecRequest::new(&["true"]), None)
        .await
        .unwrap();
    assert_eq!(ok.exit_code, 0);
    assert!(ok.stdout.is_empty());

    // A large binary payload survives the round trip byte for byte.
    let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let echoed = c
        .exec_capture(&inst.name, &ExecRequest::new(&["cat"]), Some(&big))
        .await
        .unwrap();
    assert_eq!(echoed.stdout.len(), big.len());
    assert!(echoed.stdout == big);

    let missing = c
        .exec_capture(&inst.name, &ExecRequest::new(&["/no/such/program"]), None)
        .await;
    match missing {
        Ok(o) => assert_ne!(o.exit_code, 0),
        Err(e) => assert!(!matches!(e, Error::Unreachable { .. }), "{e}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_sets_user_group_cwd_and_environment() {
    let inst = TestInstance::running("ident").await;
    let req = ExecRequest::new(&["sh", "-c", "id -u; id -g; pwd; echo \"$GREETING\""])
        .as_user(1000, 1000)
        .cwd("/tmp")
        .env("GREETING", "a=b,c d");
    let out = inst
        .client
        .exec_capture(&inst.name, &req, None)
        .await
        .unwrap();
    assert_eq!(out.stdout_text(), "1000\n1000\n/tmp\na=b,c d\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn recorded_exec_runs_without_websockets_and_keeps_output() {
    let inst = TestInstance::running("record").await;
    let c = &inst.client;
    let req = ExecRequest::new(&["sh", "-c", "sleep 2; echo done; echo oops >&2; exit 4"]);
    let op = c.exec_recorded(&inst.name, &req).await.unwrap();

    // The operation is still running: a short wait times out without failing it.
    let err = c
        .wait_operation(&op.id, Some(Duration::from_secs(1)))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");

    let out = c
        .exec_recorded_output(&op, Some(Duration::from_secs(30)))
        .await
        .unwrap();
    assert_eq!(out.exit_code, 4);
    assert_eq!(out.stdout_text(), "done\n");
    assert_eq!(out.stderr, b"oops\n");
}
