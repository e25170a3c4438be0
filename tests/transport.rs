//! The transport gaps of rouille/tiny_http, closed: idle connections end, bodies over the limit
//! are refused before they are read, shutdown is clean, and the README's nginx configuration
//! covers what the binary cannot.

use crate::harness::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn threads_of(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    done()
}

/// Half-sent requests used to hold a thread each, forever (500 of them kept 507 threads). With
/// the idle limit the server closes every one of them, their threads end, and it still answers.
///
/// (Whether each gets its own thread at once is tiny_http's business: its task pool can queue a
/// burst of new connections behind busy ones, which is one more reason for the proxy.)
#[test]
fn half_sent_requests_do_not_hold_threads() {
    let server = Server::start(Options::demo().env("CAREPOST_IDLE_CONNECTION_SECONDS", "3"));
    let pid = server.child.id();
    let before = threads_of(pid);
    let mut held: Vec<TcpStream> = (0..100)
        .map(|_| {
            let mut s = TcpStream::connect(server.addr).unwrap();
            s.write_all(b"GET /practice/login HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .unwrap();
            s
        })
        .collect();
    let started = Instant::now();
    for s in held.iter_mut() {
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut buf = Vec::new();
        let closed = s.read_to_end(&mut buf);
        assert!(
            closed.is_ok(),
            "the server closed the silent connection: {closed:?}"
        );
        assert!(!String::from_utf8_lossy(&buf).contains("200 OK"));
    }
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(
        wait_until(Duration::from_secs(15), || threads_of(pid) <= before + 5),
        "threads of silent connections end ({} before, {} now)",
        before,
        threads_of(pid)
    );
    server.client().get("/healthz").assert_status(200);
}

/// Keep-alive works: several requests for a page over 1 KiB on one connection.
#[test]
fn keep_alive_connection_serves_many_pages() {
    let server = Server::start(Options::demo());
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    for _ in 0..5 {
        stream
            .write_all(b"GET /portal/login HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let response = read_one_response(&mut stream);
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(response.len() > 1024);
    }
}

fn read_one_response(stream: &mut TcpStream) -> String {
    read_buffered_response(&mut std::io::BufReader::with_capacity(
        1,
        stream.try_clone().unwrap(),
    ))
}

/// Reads one response with a Content-Length from a buffered connection.
fn read_buffered_response(reader: &mut impl std::io::BufRead) -> String {
    let mut head = String::new();
    loop {
        let before = head.len();
        reader.read_line(&mut head).unwrap();
        if head.len() == before || head.ends_with("\r\n\r\n") {
            break;
        }
    }
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).unwrap();
    head + &String::from_utf8_lossy(&body)
}

/// A body declared larger than the limit is refused before it is sent.
#[test]
fn oversized_body_is_refused_before_reading() {
    let server = Server::start(Options::demo());
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(
            b"POST /portal/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n\
              Content-Length: 100000000\r\n\r\nemail=a",
        )
        .unwrap();
    let response = read_one_response(&mut stream);
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(response.contains("nothing was saved"));
}

/// SIGTERM: no new connections, the request in flight completes, the WAL is folded in, exit 0.
#[test]
fn shutdown_finishes_requests_in_flight() {
    let mut server = Server::start(Options::demo());
    let mut client = server.client();
    let page = client.get("/portal/login");
    let token = page.csrf();
    let body = encode_form(&[
        ("csrf", &token),
        ("email", "alex@demo.test"),
        ("password", DEMO_PASSWORD),
    ]);
    let cookies: Vec<String> = client
        .cookies
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let head = format!(
        "POST /portal/login HTTP/1.1\r\nHost: x\r\nConnection: close\r\nCookie: {}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n",
        cookies.join("; "),
        body.len()
    );
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(&body.as_bytes()[..5]).unwrap();
    std::thread::sleep(Duration::from_millis(500));

    unsafe_kill(server.child.id(), 15);
    std::thread::sleep(Duration::from_millis(700));
    assert!(
        TcpStream::connect(server.addr).is_err(),
        "no new connections are accepted while shutting down"
    );
    stream.write_all(&body.as_bytes()[5..]).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let response = parse_response(&raw);
    assert_eq!(
        response.status, 303,
        "the request in flight completed: {}",
        response.body
    );
    assert_eq!(response.location(), "/portal");

    let status = wait_timeout(&mut server.child, Duration::from_secs(20)).expect("exits");
    assert!(
        status.success(),
        "exit status {status:?}; log:\n{}",
        server.log()
    );
    let wal = server.data.join("carepost.db-wal");
    let wal_len = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    assert_eq!(wal_len, 0, "the write-ahead log was checkpointed");
    assert!(server.log().contains("stopped cleanly"));
}

// ---- the reverse proxy from the README ----

fn readme_nginx_config() -> String {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let start = readme
        .find("<!-- nginx-config-start -->")
        .expect("README has the nginx config");
    let end = readme.find("<!-- nginx-config-end -->").unwrap();
    let block = &readme[start..end];
    let code_start = block.find("```nginx\n").unwrap() + "```nginx\n".len();
    let code_end = block[code_start..].find("```").unwrap() + code_start;
    block[code_start..code_end].to_owned()
}

fn tool(name: &str) -> Option<String> {
    [
        "/usr/sbin/",
        "/usr/bin/",
        "/usr/local/sbin/",
        "/usr/local/bin/",
    ]
    .iter()
    .map(|dir| format!("{dir}{name}"))
    .find(|path| Path::new(path).exists())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Nginx {
    child: std::process::Child,
    https_port: u16,
    _dir: TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_nginx(upstream: std::net::SocketAddr) -> Option<Nginx> {
    let (Some(nginx), Some(openssl)) = (tool("nginx"), tool("openssl")) else {
        assert!(
            std::env::var("CI").is_err(),
            "CI must have nginx and openssl (bash .ci/run installs them)"
        );
        eprintln!("SKIPPED: nginx or openssl is not installed; bash .ci/run installs them");
        return None;
    };
    let dir = TempDir::new("nginx");
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    let made = Command::new(openssl)
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=portal.example.org",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(made.success());
    let http_port = free_port();
    let https_port = free_port();
    let site = readme_nginx_config()
        .replace("listen 80;", &format!("listen 127.0.0.1:{http_port};"))
        .replace(
            "listen 443 ssl;",
            &format!("listen 127.0.0.1:{https_port} ssl;"),
        )
        .replace(
            "/etc/letsencrypt/live/portal.example.org/fullchain.pem",
            cert.to_str().unwrap(),
        )
        .replace(
            "/etc/letsencrypt/live/portal.example.org/privkey.pem",
            key.to_str().unwrap(),
        )
        .replace("http://127.0.0.1:8080", &format!("http://{upstream}"));
    assert!(
        site.contains(&format!("http://{upstream}")),
        "the README config proxies to Carepost"
    );
    let prefix = dir.path();
    let conf = format!(
        "daemon off;\nmaster_process off;\nuser root;\npid {p}/nginx.pid;\nerror_log {p}/error.log;\n\
         events {{ worker_connections 256; }}\n\
         http {{\n access_log off;\n client_body_temp_path {p}/body;\n proxy_temp_path {p}/proxy;\n\
         fastcgi_temp_path {p}/fastcgi;\n uwsgi_temp_path {p}/uwsgi;\n scgi_temp_path {p}/scgi;\n{site}\n}}\n",
        p = prefix.display()
    );
    let conf_path = prefix.join("nginx.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let child = Command::new(nginx)
        .arg("-p")
        .arg(prefix)
        .arg("-c")
        .arg(&conf_path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let ready = wait_until(Duration::from_secs(10), || {
        TcpStream::connect(("127.0.0.1", https_port)).is_ok()
    });
    assert!(
        ready,
        "nginx started: {}",
        std::fs::read_to_string(prefix.join("error.log")).unwrap_or_default()
    );
    Some(Nginx {
        child,
        https_port,
        _dir: dir,
    })
}

/// curl over TLS to the proxy; returns (status, response headers).
fn curl(port: u16, extra: &[&str]) -> (u16, String) {
    let out = Command::new(tool("curl").expect("curl is installed"))
        .args(["-sk", "-o", "/dev/null", "-D", "-", "--max-time", "20"])
        .args(["--resolve", &format!("portal.example.org:{port}:127.0.0.1")])
        .args(extra)
        .arg(format!("https://portal.example.org:{port}/portal/login"))
        .output()
        .unwrap();
    let headers = String::from_utf8_lossy(&out.stdout).into_owned();
    let status = headers
        .lines()
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, headers)
}

#[test]
fn readme_nginx_config_covers_what_the_binary_cannot() {
    let server = Server::start(Options::demo());
    let Some(proxy) = start_nginx(server.addr) else {
        return;
    };

    // Through TLS to Carepost, with Carepost's headers and the proxy's HSTS.
    let (status, headers) = curl(proxy.https_port, &[]);
    assert_eq!(status, 200, "{headers}");
    let lower = headers.to_lowercase();
    assert!(
        lower.contains("content-security-policy: default-src 'none'"),
        "{headers}"
    );
    assert!(lower.contains("strict-transport-security"), "{headers}");

    // A header line of 64 KiB is refused by nginx and never reaches Carepost. The server's log
    // is read from its output by another thread: let the request above reach it first.
    std::thread::sleep(Duration::from_millis(300));
    let requests_before = server.log().matches("GET /portal/login").count();
    let long = format!("X-Long: {}", "a".repeat(64 * 1024));
    let (status, _) = curl(proxy.https_port, &["-H", &long]);
    assert!(
        status == 400 || status == 431 || status == 494,
        "long header refused, got {status}"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        server.log().matches("GET /portal/login").count(),
        requests_before
    );

    // A body over the attachment limit is refused at the door.
    let (status, _) = curl(
        proxy.https_port,
        &[
            "-X",
            "POST",
            "-H",
            "Content-Length: 40000000",
            "-H",
            "Expect: 100-continue",
            "--data-binary",
            "x",
        ],
    );
    assert_eq!(status, 413);

    // An absurd declared length (which aborts tiny_http when it discards the unread body) is
    // refused by nginx; Carepost never sees it and stays up.
    let (status, _) = curl(
        proxy.https_port,
        &[
            "-X",
            "POST",
            "-H",
            "Content-Length: 100000000000000",
            "-H",
            "Expect: 100-continue",
            "--data-binary",
            "x",
        ],
    );
    assert_eq!(status, 413);
    let mut server = server;
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "Carepost is still running"
    );

    // A client that opens a connection and sends nothing is dropped by nginx.
    let mut idle = TcpStream::connect(("127.0.0.1", proxy.https_port)).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(40)))
        .unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    let _ = idle.read_to_end(&mut buf);
    assert!(
        started.elapsed() < Duration::from_secs(39),
        "nginx closed the silent connection"
    );
}

/// Malformed addresses answer 400 with a readable page, never a 500 or a dropped connection.
#[test]
fn malformed_urls_get_a_400_page() {
    let server = Server::start(Options::demo());
    for raw in [
        "/%ff%fe",
        "/practice/%00",
        "/%zz",
        "*",
        "http://elsewhere/practice",
        "/portal?x=%0a",
    ] {
        let request = format!("GET {raw} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let response = send_raw(server.addr, request.as_bytes());
        assert_eq!(response.status, 400, "{raw}");
        assert!(response.body.contains("This address is not valid"), "{raw}");
        assert_eq!(response.header("X-Frame-Options"), Some("DENY"), "{raw}");
    }
    assert!(!server.log().contains(" 500 "));
}

/// Benchmark, not a test of speed: run with
/// `cargo test --release --test integration bench_keep_alive -- --ignored --nocapture`.
/// Prints requests per second and latency for a 1.2 KB page over keep-alive connections (which
/// stalled ~40 ms per response without TCP_NODELAY) and over a new connection per request.
#[test]
#[ignore]
fn bench_keep_alive() {
    let server = Server::start(Options::demo());
    let size = server.client().get("/portal/login").body.len();
    for (label, keep_alive) in [("keep-alive", true), ("connection per request", false)] {
        let clients = 16;
        let run_for = Duration::from_secs(5);
        let handles: Vec<_> = (0..clients)
            .map(|_| {
                let addr = server.addr;
                std::thread::spawn(move || {
                    let mut latencies = Vec::new();
                    let started = Instant::now();
                    let mut stream: Option<std::io::BufReader<TcpStream>> = None;
                    while started.elapsed() < run_for {
                        let t = Instant::now();
                        if keep_alive {
                            let s = stream.get_or_insert_with(|| {
                                std::io::BufReader::new(TcpStream::connect(addr).unwrap())
                            });
                            s.get_mut().write_all(b"GET /portal/login HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
                            read_buffered_response(s);
                        } else {
                            send_raw(addr, b"GET /portal/login HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
                        }
                        latencies.push(t.elapsed());
                    }
                    latencies
                })
            })
            .collect();
        let mut all: Vec<Duration> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        all.sort();
        let p = |q: f64| all[((all.len() as f64 * q) as usize).min(all.len() - 1)];
        println!(
            "BENCH {label}: {clients} clients, {size}-byte page: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms",
            all.len() as f64 / run_for.as_secs_f64(),
            p(0.5).as_secs_f64() * 1000.0,
            p(0.99).as_secs_f64() * 1000.0
        );
    }
}
