//! The `xia` binary as a user runs it: exact outputs, exit codes, and
//! one-line errors on stderr.

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn xia(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_xia"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("xia runs");
    let mut pipe = child.stdin.take().expect("stdin piped");
    if let Some(text) = stdin {
        pipe.write_all(text.as_bytes()).expect("write stdin");
    }
    drop(pipe);
    child.wait_with_output().expect("xia finishes")
}

fn ok(args: &[&str]) -> String {
    let out = xia(args, None);
    assert!(
        out.status.success(),
        "xia {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty() || args[0] == "key",
        "unexpected stderr"
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

fn fails(args: &[&str]) -> String {
    let out = xia(args, None);
    assert!(!out.status.success(), "xia {args:?} should fail");
    assert!(out.stdout.is_empty(), "no output on failure");
    let err = String::from_utf8(out.stderr).expect("utf-8 stderr");
    assert_eq!(err.lines().count(), 1, "one-line error, got {err:?}");
    err
}

const A: &str = "AD:0606060606060606060606060606060606060606";
const H: &str = "HID:0808080808080808080808080808080808080808";
const S: &str = "SID:0909090909090909090909090909090909090909";

#[test]
fn dag_parse_prints_xia_core_text() {
    let re = format!("RE ( IP:192.168.0.1 ) {A} {H} {S}");
    let out = ok(&["dag", "parse", &re]);
    assert_eq!(
        out,
        format!("DAG 1 0 - \nIP:4500000000010000fafa000000000000c0a80001 1 - \n{A} 2 - \n{H} 3 - \n{S}\n")
    );
    let back = ok(&["dag", "parse", "--format", "re", &out]);
    assert_eq!(
        back,
        format!("RE ( IP:4500000000010000fafa000000000000c0a80001 ) {A} {H} {S}\n")
    );
}

#[test]
fn dag_parse_wire_and_dot_and_stdin() {
    let wire = ok(&["dag", "parse", "--format", "wire", &format!("RE {A} {S}")]);
    assert_eq!(
        wire,
        format!("00000010{}017f7f7f00000013{}007f7f7f\n", &A[3..], &S[4..])
    );
    let dot = ok(&["dag", "parse", "--format", "dot", &format!("RE {A} {S}")]);
    assert!(dot.starts_with("digraph dag {"));
    let out = xia(&["dag", "parse", "-"], Some(&format!("RE {A}\n{S}\n")));
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("DAG 0 - \n{A} 1 - \n{S}\n")
    );
}

#[test]
fn dag_parse_errors_are_one_line() {
    let err = fails(&["dag", "parse", "RE AD:0x12"]);
    assert!(err.contains("token 1 (\"AD:0x12\")"), "{err}");
    let err = fails(&["dag", "parse", ""]);
    assert!(err.contains("empty address"), "{err}");
    let four_way = format!("DAG 3 0 1 - {A} 3 2 - IP:1.2.3.4 3 0 - {H} 3 - {S}");
    let err = fails(&["dag", "parse", "--format", "re", &four_way]);
    assert!(err.contains("no RE form"), "{err}");
}

#[test]
fn xip_encode_then_decode() {
    let hex = ok(&[
        "xip",
        "encode",
        "--dst",
        &format!("RE {A} {H} {S}"),
        "--src",
        &format!("RE {H}"),
        "--nxt",
        "xdgram",
        "--hlim",
        "64",
        "--payload",
        "616263",
    ]);
    assert!(hex.starts_with("01020003400301"), "{hex}");
    let out = xia(&["xip", "decode", "-"], Some(&hex));
    assert!(out.status.success());
    let dump = String::from_utf8(out.stdout).unwrap();
    assert!(dump.starts_with("XIP v1, next header XDGRAM (2), hop limit 64, last entry (0x7e), header 120 + payload 3 = 123 bytes\n"), "{dump}");
    assert!(dump.contains(&format!("    [2] {S} (intent)\n")), "{dump}");
    assert!(dump.trim_end().ends_with("abc"), "{dump}");
}

#[test]
fn xip_decode_refuses_bad_packets() {
    let err = fails(&["xip", "decode", "0100"]);
    assert!(err.contains("truncated"), "{err}");
    let err = fails(&["xip", "decode", "zz"]);
    assert!(err.contains("not a hex digit"), "{err}");
}

#[test]
fn key_new_and_show() {
    let dir = std::env::temp_dir().join(format!("xia-cli-keys-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let xid = ok(&[
        "key",
        "new",
        "--dir",
        dir.to_str().unwrap(),
        "--kind",
        "sid",
    ]);
    assert!(
        xid.starts_with("SID:") && xid.trim_end().len() == 44,
        "{xid}"
    );
    let file = dir.join(format!("sid-{}.key", &xid.trim_end()[4..]));
    let shown = ok(&["key", "show", file.to_str().unwrap()]);
    assert!(shown.starts_with(&format!("xid:        {xid}")), "{shown}");
    assert!(shown.contains("secret key: present"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = fails(&["key", "show", file.to_str().unwrap()]);
        assert!(err.contains("mode 0640"), "{err}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn demo_runs() {
    let out = ok(&["demo"]);
    assert!(
        out.contains("30000000 of 30000000 bytes, 0 corrupt, 0 lost"),
        "{out}"
    );
    assert!(out.contains("its connection moved 1 time(s)"), "{out}");
    assert!(out.contains("1. Self-certifying identities"));
    assert!(out.contains("another key:            refused"));
    assert!(out.contains("XCMP time exceeded"));
}
