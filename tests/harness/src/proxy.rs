//! A loopback TCP proxy that a test can partition: one process reaches a server (nats-server)
//! through it, and the test decides when that path breaks and how.
//!
//! Two ways to break it, because clients notice them very differently:
//! - [`partition`](TcpProxy::partition) (a black hole): nothing more is forwarded either way,
//!   but every connection stays open and new ones are accepted by the kernel and then left
//!   without an answer. Nobody is told anything; a client notices only when its own
//!   requests, pings or timeouts say so. This is what a network partition looks like.
//! - [`cut`](TcpProxy::cut): every connection is closed and new connections are refused.
//!   Clients notice at once (end of file, connection refused).
//!
//! [`heal`](TcpProxy::heal) forwards again; connections that were partitioned carry on
//! where they stopped (what was sent meanwhile arrives late, as after a real partition).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Context as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the proxy does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forwards bytes both ways.
    Forward,
    /// Forwards nothing and closes nothing: connections stall, new ones are never answered.
    Partitioned,
    /// Closes every connection and refuses new ones.
    Cut,
}

/// A proxy on `127.0.0.1:<port>` forwarding to one target; stopped when dropped.
pub struct TcpProxy {
    addr: SocketAddr,
    target: SocketAddr,
    mode: watch::Sender<Mode>,
    accepted: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl TcpProxy {
    /// Starts forwarding from a free loopback port to `target`.
    pub async fn start(target: SocketAddr) -> anyhow::Result<TcpProxy> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the proxy")?;
        let addr = listener.local_addr()?;
        let (mode, _) = watch::channel(Mode::Forward);
        let accepted = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(serve(
            Some(listener),
            addr,
            target,
            mode.clone(),
            accepted.clone(),
        ));
        Ok(TcpProxy {
            addr,
            target,
            mode,
            accepted,
            task,
        })
    }

    /// A proxy in front of a nats-server on loopback port `port`.
    pub async fn to_port(port: u16) -> anyhow::Result<TcpProxy> {
        Self::start(SocketAddr::from(([127, 0, 0, 1], port))).await
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `nats://127.0.0.1:<port>`, for a NATS client that should go through the proxy.
    pub fn nats_url(&self) -> String {
        format!("nats://{}", self.addr)
    }

    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// Connections accepted and forwarded so far (a partitioned proxy accepts none).
    pub fn connections(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }

    pub fn mode(&self) -> Mode {
        *self.mode.borrow()
    }

    /// Black-holes the path: see the module documentation.
    pub fn partition(&self) {
        self.mode.send_replace(Mode::Partitioned);
    }

    /// Closes every connection and refuses new ones.
    pub fn cut(&self) {
        self.mode.send_replace(Mode::Cut);
    }

    /// Forwards again.
    pub fn heal(&self) {
        self.mode.send_replace(Mode::Forward);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        // Cut first so the connection tasks close their sockets, then stop accepting.
        self.mode.send_replace(Mode::Cut);
        self.task.abort();
    }
}

/// The accept loop. Accepts only while forwarding: a partitioned listener leaves new
/// connections in the kernel's backlog, unanswered; a cut one is closed (connections are
/// refused) and bound again on the same address when forwarding resumes.
async fn serve(
    mut listener: Option<TcpListener>,
    addr: SocketAddr,
    target: SocketAddr,
    mode: watch::Sender<Mode>,
    accepted: Arc<AtomicU64>,
) {
    let mut watching = mode.subscribe();
    loop {
        let current = *watching.borrow_and_update();
        match current {
            Mode::Cut => {
                listener = None;
            }
            Mode::Partitioned => {}
            Mode::Forward => {
                if listener.is_none() {
                    match TcpListener::bind(addr).await {
                        Ok(bound) => listener = Some(bound),
                        Err(err) => {
                            eprintln!("test-harness proxy: cannot listen on {addr} again: {err}");
                            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                            continue;
                        }
                    }
                }
                let Some(open) = listener.as_ref() else {
                    continue;
                };
                tokio::select! {
                    conn = open.accept() => {
                        if let Ok((client, _)) = conn {
                            accepted.fetch_add(1, Ordering::SeqCst);
                            tokio::spawn(connection(client, target, mode.subscribe()));
                        }
                        continue;
                    }
                    changed = watching.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        continue;
                    }
                }
            }
        }
        if watching.changed().await.is_err() {
            return;
        }
    }
}

/// One proxied connection: pumps both ways until either side closes or the proxy is cut.
async fn connection(client: TcpStream, target: SocketAddr, mode: watch::Receiver<Mode>) {
    let Ok(server) = TcpStream::connect(target).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    // Either direction ending (end of file, an error or a cut) ends both: the halves are
    // dropped together, which closes both sockets.
    tokio::select! {
        () = pump(client_read, server_write, mode.clone()) => {}
        () = pump(server_read, client_write, mode) => {}
    }
}

/// Copies `from` to `to` while the proxy forwards; reads nothing while it is partitioned (so
/// the bytes wait in the kernel buffers, then fill them), returns when it is cut.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut mode: watch::Receiver<Mode>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match mode.wait_for(|m| *m != Mode::Partitioned).await {
            Ok(m) if *m == Mode::Forward => {}
            _ => return,
        }
        let read = tokio::select! {
            read = from.read(&mut buf) => read,
            changed = mode.changed() => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
        };
        let n = match read {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return;
            }
            Ok(n) => n,
        };
        // Bytes read before a partition began are still delivered, like packets already on
        // the wire; a cut drops them.
        tokio::select! {
            written = to.write_all(&buf[..n]) => {
                if written.is_err() {
                    return;
                }
            }
            _ = mode.wait_for(|m| *m == Mode::Cut) => return,
        }
    }
}
