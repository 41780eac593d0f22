//! The binary itself: bad configuration, unreachable database, signals, logs.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::Duration,
};

fn switchboard() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_switchboard"));
    command
        .env_remove("DATABASE_URL")
        .env_remove("RUST_LOG")
        .env("SWITCHBOARD_LOG", "info");
    command
}

/// Exactly one line on stderr, no panic, no backtrace.
fn assert_one_clear_line(stderr: &[u8], mentions: &str) {
    let stderr = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "stderr was: {stderr}");
    assert!(lines[0].starts_with("error: "), "stderr was: {stderr}");
    assert!(lines[0].contains(mentions), "stderr was: {stderr}");
    assert!(!stderr.contains("panicked"), "stderr was: {stderr}");
}

#[test]
fn a_malformed_database_url_is_one_clear_line_and_a_nonzero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let output = switchboard()
        .current_dir(dir.path())
        .env("DATABASE_URL", "mysql://root@localhost/x")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert_one_clear_line(&output.stderr, "DATABASE_URL");
}

#[test]
fn an_unreachable_database_is_one_clear_line_and_a_nonzero_exit() {
    // Bind a port and close it so nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let output = switchboard()
        .current_dir(dir.path())
        .env(
            "DATABASE_URL",
            format!("postgres://postgres:hunter2@127.0.0.1:{port}/switchboard"),
        )
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert_one_clear_line(&output.stderr, "cannot connect to PostgreSQL");
    // The password in the URL is not repeated back.
    assert!(!String::from_utf8_lossy(&output.stderr).contains("hunter2"));
}

#[test]
fn a_bad_listen_address_is_refused_with_the_variable_named() {
    let dir = tempfile::tempdir().unwrap();
    let output = switchboard()
        .current_dir(dir.path())
        .env("SWITCHBOARD_LISTEN", "not-an-address")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert_one_clear_line(&output.stderr, "SWITCHBOARD_LISTEN");
}

#[test]
fn with_no_configuration_it_creates_the_sqlite_file_logs_json_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = switchboard()
        .current_dir(dir.path())
        .env("SWITCHBOARD_LISTEN", "127.0.0.1:0")
        .env("SWITCHBOARD_LOG_FORMAT", "json")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });

    // Wait for the "listening" line; every line must be a JSON object.
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !seen
        .iter()
        .any(|l: &serde_json::Value| l["message"] == "listening")
    {
        let remaining = deadline.saturating_duration_since(std::time::Instant::now());
        let line = lines_rx
            .recv_timeout(remaining)
            .expect("the service did not log `listening`");
        let json: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        seen.push(json);
    }
    assert!(dir.path().join("data/switchboard.db").exists());

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "did not stop after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "exit status {exit:?}");
    let rest: Vec<String> = lines_rx.try_iter().collect();
    assert!(
        rest.iter().any(|l| l.contains("\"stopped\"")),
        "no `stopped` line in {rest:?}"
    );
}

#[test]
fn admin_create_reads_the_password_from_stdin_and_the_account_can_log_in() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let run = |email: &str, password: &str| {
        let mut child = switchboard()
            .current_dir(dir.path())
            .args(["admin", "create", "--email", email, "--role", "owner"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
        child.wait_with_output().unwrap()
    };
    let output = run("first@example.com", "a strong owner password");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("created owner admin first@example.com")
    );
    // The password is not echoed anywhere.
    assert!(!String::from_utf8_lossy(&output.stdout).contains("a strong owner password"));

    let weak = run("second@example.com", "short");
    assert!(!weak.status.success());
    assert_one_clear_line(&weak.stderr, "password");
    let taken = run("first@example.com", "another strong password");
    assert!(!taken.status.success());
    assert_one_clear_line(&taken.stderr, "already exists");

    // The account logs in through the API of a server on the same file.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut config = crate::helpers::test_config(switchboard::config::DatabaseConfig::Sqlite {
            path: dir.path().join("data/switchboard.db"),
        });
        config.listen = "127.0.0.1:0".parse().unwrap();
        let app = crate::helpers::TestApp::spawn_with(config).await;
        app.admin_login("first@example.com", "a strong owner password")
            .await;
        app.stop().await;
    });
}

#[test]
fn pretty_logs_into_a_pipe_have_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    // A bad setting stops it after its first log lines; they went to a pipe.
    let output = switchboard()
        .current_dir(dir.path())
        .env("SWITCHBOARD_LOG_FORMAT", "pretty")
        .env("SWITCHBOARD_LISTEN", "127.0.0.1:0")
        .env(
            "SWITCHBOARD_CORS_ORIGINS",
            "https://cabinet.example.com/path",
        )
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert_one_clear_line(&output.stderr, "SWITCHBOARD_CORS_ORIGINS");
    let mut child = switchboard()
        .current_dir(dir.path())
        .env("SWITCHBOARD_LOG_FORMAT", "pretty")
        .env("SWITCHBOARD_LISTEN", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines().map_while(Result::ok);
    let listening = lines
        .by_ref()
        .take(200)
        .find(|l| l.contains("listening"))
        .expect("no `listening` line");
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        !listening.contains('\u{1b}'),
        "colour codes in {listening:?}"
    );
}
