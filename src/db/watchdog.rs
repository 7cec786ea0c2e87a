//! Read timeouts for MySQL connections: a statement whose answer does not come within its
//! connection's `read_timeout` has its socket shut down, so the call returns instead of waiting for
//! ever on a frozen server (`SIGSTOP`, a hung host behind a live TCP stack).
//!
//! Diesel's `MysqlConnection` gives no access to libmariadb's handle, so its
//! `MYSQL_OPT_READ_TIMEOUT` cannot be set, and libmariadb's default waits for ever. Instead:
//! - after connecting, the connection's socket is found among the process's descriptors: the TCP
//!   socket whose peer is the server and whose local port is the one the server reports for the
//!   session (`information_schema.PROCESSLIST`), the 4-tuple no other socket shares;
//! - each statement stores its deadline in the connection's [`Watch`] (one atomic store) and clears
//!   it when it returns;
//! - one thread for the process looks at every live watch four times a second, and shuts down the
//!   socket of a statement past its deadline (`shutdown(2)`, both ways): libmariadb's wait ends with
//!   a lost connection, which the connection then reports as a read timeout.
//!
//! The socket is only touched while the connection holds it open: the watch's lock is taken by the
//! thread before a shutdown and by the connection before it closes, so a descriptor number reused
//! after a close is never shut down. A connection over a Unix socket (`?unix_socket=`) gets no read
//! timeout: a Unix socket has no port to tell it from the others to the same server.

use std::net::SocketAddr;
use std::os::fd::{BorrowedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

/// How often the watchdog thread looks at the deadlines.
const TICK: Duration = Duration::from_millis(250);

/// One connection's socket and the deadline of its statement in flight.
#[derive(Debug)]
pub(crate) struct Watch {
    /// The socket, while the connection holds it open; `None` once the connection is closing.
    socket: Mutex<Option<RawFd>>,
    /// Nanoseconds since [`epoch`] at which the statement in flight times out; 0 when none is.
    deadline: AtomicU64,
    /// Set when this watch shut the socket down: the statement's error is a timeout.
    fired: AtomicBool,
    /// How long a statement may wait for its answer.
    timeout: Duration,
}

/// The instant deadlines are counted from.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn nanos_since_epoch(at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(epoch()).as_nanos())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// Every live watch, and the thread that enforces them (started with the first).
fn registry() -> &'static Mutex<Vec<Weak<Watch>>> {
    static REGISTRY: OnceLock<Mutex<Vec<Weak<Watch>>>> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        std::thread::Builder::new()
            .name("applyops-read-timeouts".into())
            .spawn(enforce)
            .expect("start the read-timeout thread");
        Mutex::new(Vec::new())
    })
}

/// The watchdog thread's loop.
fn enforce() {
    loop {
        std::thread::sleep(TICK);
        let now = nanos_since_epoch(Instant::now());
        let watches: Vec<Arc<Watch>> = {
            let mut registry = registry().lock().unwrap_or_else(|e| e.into_inner());
            registry.retain(|watch| watch.strong_count() > 0);
            registry.iter().filter_map(Weak::upgrade).collect()
        };
        for watch in watches {
            let deadline = watch.deadline.load(Ordering::Acquire);
            if deadline != 0 && deadline <= now {
                watch.fire();
            }
        }
    }
}

impl Watch {
    /// Watches `socket` (the connection's, found by [`find_socket`]) with `timeout` per statement.
    pub(crate) fn new(socket: RawFd, timeout: Duration) -> Arc<Watch> {
        let watch = Arc::new(Watch {
            socket: Mutex::new(Some(socket)),
            deadline: AtomicU64::new(0),
            fired: AtomicBool::new(false),
            timeout,
        });
        registry()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::downgrade(&watch));
        watch
    }

    /// A statement starts: it times out `timeout` from now.
    pub(crate) fn arm(&self) {
        let deadline = Instant::now()
            .checked_add(self.timeout)
            .map_or(u64::MAX, nanos_since_epoch);
        self.deadline.store(deadline, Ordering::Release);
    }

    /// The statement returned. True when it was cut off by its timeout.
    pub(crate) fn disarm(&self) -> bool {
        self.deadline.store(0, Ordering::Release);
        self.fired.load(Ordering::Acquire)
    }

    /// How long a statement may wait.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The connection is closing its socket: never touch it again.
    pub(crate) fn release(&self) {
        *self.socket.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.deadline.store(0, Ordering::Release);
    }

    /// Shuts the socket down, if the connection still holds it and the statement is still past its
    /// deadline.
    fn fire(&self) {
        let socket = self.socket.lock().unwrap_or_else(|e| e.into_inner());
        let Some(fd) = *socket else {
            return;
        };
        let deadline = self.deadline.load(Ordering::Acquire);
        if deadline == 0 || deadline > nanos_since_epoch(Instant::now()) {
            return;
        }
        // SAFETY: `fd` is open and is this connection's socket for as long as the lock is held: the
        // connection clears it under the same lock ([`Watch::release`]) before it closes the socket.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        if rustix::net::shutdown(fd, rustix::net::Shutdown::Both).is_ok() {
            self.fired.store(true, Ordering::Release);
            tracing::warn!(
                timeout_ms = self.timeout.as_millis() as u64,
                "a MySQL statement got no answer within its read timeout; its connection was closed"
            );
        }
    }
}

/// The descriptor of this process's TCP socket whose peer is one of `servers` and whose local port
/// is `local_port`, or `None`.
pub(crate) fn find_socket(servers: &[SocketAddr], local_port: u16) -> Option<RawFd> {
    let entries = std::fs::read_dir("/dev/fd").ok()?;
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<RawFd>().ok())
        .find(|&fd| {
            // SAFETY: only read (getsockname/getpeername): a descriptor closed or reused meanwhile
            // by another thread fails these calls or names another socket, which does not match
            // the 4-tuple asked for (only the connection's own socket has it).
            let fd = unsafe { BorrowedFd::borrow_raw(fd) };
            let local = rustix::net::getsockname(fd).ok().and_then(ip_addr);
            let peer = rustix::net::getpeername(fd)
                .ok()
                .and_then(|peer| peer.and_then(ip_addr));
            matches!((local, peer), (Some(local), Some(peer))
                if local.port() == local_port && servers.contains(&peer))
        })
}

/// An IP socket address, or `None` for another family.
fn ip_addr(addr: rustix::net::SocketAddrAny) -> Option<SocketAddr> {
    SocketAddr::try_from(addr).ok()
}
