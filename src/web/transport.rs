//! Closing the gaps of rouille's stock transport (tiny_http) from outside it, without patching
//! the crate. Measured on this kind of machine (see README, "Transport"):
//!
//! - tiny_http writes a response's headers and body in two writes without TCP_NODELAY, so on a
//!   keep-alive connection every response over ~1 KiB waits ~40 ms for the client's delayed ACK.
//!   Linux copies TCP_NODELAY from a listening socket to every socket accept() returns, so it is
//!   set once on the listener, which the process finds among its own file descriptors.
//! - tiny_http sets no socket timeouts and keeps a thread per connection, so idle or half-sent
//!   requests hold threads forever. A watch thread ends every accepted connection on which
//!   nothing was received or sent for `idle`, and its thread ends with it. (No timeout is set on
//!   the listener: one there ends tiny_http's accept loop.)
//!
//! What cannot be closed here (a header line of unbounded length, a client that trickles bytes
//! forever, TLS) is covered by the reverse proxy that the README gives for internet-facing
//! installs.

use std::mem::size_of;
use std::net::SocketAddr;
use std::os::unix::io::RawFd;
use std::time::Duration;

/// How often connections are checked for silence.
const WATCH_EVERY: Duration = Duration::from_millis(500);

/// The listening socket bound to `addr`.
#[derive(Clone, Copy, Debug)]
pub struct Listener(RawFd);

/// Sets TCP_NODELAY on the listener and starts the watchman. Returns the listener so that
/// shutdown can stop accepting.
pub fn harden(addr: SocketAddr, idle: Duration) -> Result<Listener, String> {
    let listener = find_listener(addr).ok_or_else(|| {
        format!("cannot find the listening socket for {addr} among this process's files")
    })?;
    set_int_option(listener.0, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)
        .map_err(|e| format!("cannot set TCP_NODELAY on the listening socket: {e}"))?;
    let port = addr.port();
    std::thread::Builder::new()
        .name("connection-watch".into())
        .spawn(move || loop {
            for fd in connections_on_port(port) {
                close_if_idle(fd, idle);
            }
            std::thread::sleep(WATCH_EVERY);
        })
        .map_err(|e| format!("cannot start the connection watch thread: {e}"))?;
    Ok(listener)
}

/// Stops the listener from accepting: tiny_http's accept loop ends on the error that follows.
pub fn stop_accepting(listener: Listener) {
    // SAFETY: shutdown on a descriptor of this process; on a wrong one it merely fails.
    unsafe {
        libc::shutdown(listener.0, libc::SHUT_RDWR);
    }
}

/// This process's socket file descriptors.
fn own_sockets() -> Vec<RawFd> {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let fd: RawFd = entry.file_name().to_str()?.parse().ok()?;
            let target = std::fs::read_link(entry.path()).ok()?;
            target.to_str()?.starts_with("socket:").then_some(fd)
        })
        .collect()
}

pub fn find_listener(addr: SocketAddr) -> Option<Listener> {
    own_sockets()
        .into_iter()
        .find(|fd| is_listening(*fd) && local_addr(*fd) == Some(addr))
        .map(Listener)
}

/// Accepted connections: sockets of this process, not listening, whose local port is `port`.
pub fn connections_on_port(port: u16) -> Vec<RawFd> {
    own_sockets()
        .into_iter()
        .filter(|fd| !is_listening(*fd) && local_addr(*fd).is_some_and(|a| a.port() == port))
        .collect()
}

/// Ends a connection on which nothing was received or sent for `idle`. The kernel keeps the time
/// of the last data each way (TCP_INFO); shutting the socket down wakes tiny_http's blocked read
/// with end-of-stream, so its thread closes the connection and ends. (SO_RCVTIMEO cannot do this:
/// it does not apply to a read that is already waiting.)
fn close_if_idle(fd: RawFd, idle: Duration) {
    // SAFETY: tcp_info is plain data; getsockopt fills at most `len` bytes.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::tcp_info>() as libc::socklen_t;
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return;
    }
    let silent_ms = info.tcpi_last_data_recv.min(info.tcpi_last_data_sent);
    if u128::from(silent_ms) >= idle.as_millis() {
        // SAFETY: shutdown on a connection socket of this process.
        unsafe {
            libc::shutdown(fd, libc::SHUT_RDWR);
        }
    }
}

pub fn get_int_option(fd: RawFd, level: libc::c_int, option: libc::c_int) -> Option<i32> {
    let mut value: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `value`.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            level,
            option,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some(value)
}

fn set_int_option(
    fd: RawFd,
    level: libc::c_int,
    option: libc::c_int,
    value: libc::c_int,
) -> std::io::Result<()> {
    // SAFETY: setsockopt with a c_int of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            option,
            (&value as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn is_listening(fd: RawFd) -> bool {
    get_int_option(fd, libc::SOL_SOCKET, libc::SO_ACCEPTCONN) == Some(1)
}

fn local_addr(fd: RawFd) -> Option<SocketAddr> {
    // SAFETY: sockaddr_storage is plain data; getsockname fills at most `len` bytes.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    let rc = unsafe {
        libc::getsockname(
            fd,
            (&mut storage as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return None;
    }
    match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let v4: libc::sockaddr_in =
                unsafe { std::ptr::read((&storage as *const libc::sockaddr_storage).cast()) };
            let ip = std::net::Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr));
            Some(SocketAddr::from((ip, u16::from_be(v4.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let v6: libc::sockaddr_in6 =
                unsafe { std::ptr::read((&storage as *const libc::sockaddr_storage).cast()) };
            let ip = std::net::Ipv6Addr::from(v6.sin6_addr.s6_addr);
            Some(SocketAddr::from((ip, u16::from_be(v6.sin6_port))))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpStream;

    /// The fixes act on the sockets tiny_http really accepts: an accepted connection inherits
    /// TCP_NODELAY from the listener, and a silent one, even half-sent, is closed.
    #[test]
    fn accepted_connections_get_nodelay_and_idle_close() {
        let server =
            rouille::Server::new("127.0.0.1:0", |_| rouille::Response::text("x".repeat(4000)))
                .unwrap()
                .pool_size(2);
        let addr = server.server_addr();
        let listener = harden(addr, Duration::from_secs(1)).unwrap();
        let (_handle, stop) = server.stoppable();

        let mut client = TcpStream::connect(addr).unwrap();
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Half: ")
            .unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let accepted = connections_on_port(addr.port());
        assert!(!accepted.is_empty(), "the accepted connection is found");
        for fd in &accepted {
            assert_eq!(
                get_int_option(*fd, libc::IPPROTO_TCP, libc::TCP_NODELAY),
                Some(1)
            );
        }
        assert!(!accepted.contains(&listener.0));

        // Left half-sent and silent, the connection is closed by the server.
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let started = std::time::Instant::now();
        let mut rest = Vec::new();
        let closed = client.read_to_end(&mut rest);
        assert!(
            closed.is_ok(),
            "server closed the idle connection: {closed:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(9));
        let _ = stop.send(());
    }
}
