//! A job on a stock ComfyUI (or the simulator), through the protocol
//! crate's [`ComfySession`]: inputs uploaded under content-addressed names,
//! the prompt queued under the job's id, its frames followed on the slot's
//! socket.
//!
//! A slot's socket outlives its job: a job followed to its end leaves the
//! socket for the slot's next job ([`IdleSockets`]), which then queues its
//! prompt at once instead of connecting and shaking hands first (a
//! millisecond on the simulator, several on a stock ComfyUI).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use comfyume_protocol::session::cancel_prompt;
use comfyume_protocol::{
    BackendSocket, ComfyClient, ComfySession, Incoming, JobStatus, OutputFile,
};
use tokio::sync::oneshot;

use super::session::{SessionError, SessionEvent, Submission};

/// Each slot's socket while no job uses it. A socket is only ever used by
/// one job at a time: a job takes it, and gives it back only after its
/// prompt's last frame, so the next job reads nothing of it but late
/// status frames.
///
/// A parked socket is read all the while, and what comes is dropped
/// ([`drain`]): ComfyUI sends every socket its queue status whenever its
/// queue changes, and a socket nobody read would fill its buffers and
/// stall ComfyUI's sending to everyone (other slots' jobs included). It is
/// kept only [`KEEP_IDLE`]: a connection silently dropped by the network
/// (a NAT, a load balancer) looks open until something is sent on it. Each
/// take and put on the backend closes the sockets parked longer.
#[derive(Clone)]
pub struct IdleSockets {
    cells: Arc<[Mutex<Option<Parked>>]>,
    keep: Duration,
}

/// How long a socket may wait for the slot's next job. Jobs queued back to
/// back reuse it; after a pause the next job connects afresh.
const KEEP_IDLE: Duration = Duration::from_secs(10);

/// A socket waiting for its slot's next job, since `at`, read by its
/// [`drain`] task. Dropping it ends the task, which closes the socket.
pub struct Parked {
    /// Tells the task to hand the socket back.
    stop: oneshot::Sender<()>,
    /// The socket, if it was still open when handed back.
    socket: tokio::task::JoinHandle<Option<BackendSocket>>,
    at: Instant,
}

/// Reads a parked socket until told to hand it back, dropping what comes
/// (queue status, late frames of earlier prompts; pings are answered on
/// the way). `None` once the server closed it or it failed. Told nothing
/// (the [`Parked`] dropped), it ends and the socket closes.
async fn drain(
    mut socket: BackendSocket,
    mut stop: oneshot::Receiver<()>,
) -> Option<BackendSocket> {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        tokio::select! {
            biased;
            _ = &mut stop => return Some(socket),
            frame = socket.next() => match frame {
                Some(Ok(Message::Close(_)) | Err(_)) | None => return None,
                Some(Ok(_)) => {}
            },
        }
    }
}

impl std::fmt::Debug for IdleSockets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdleSockets")
            .field("slots", &self.cells.len())
            .finish()
    }
}

impl IdleSockets {
    pub fn new(slots: u32) -> Self {
        Self::keeping(slots, KEEP_IDLE)
    }

    fn keeping(slots: u32, keep: Duration) -> Self {
        Self {
            cells: (0..slots).map(|_| Mutex::new(None)).collect(),
            keep,
        }
    }

    /// The place of slot `slot`'s socket.
    pub fn slot(&self, slot: u32) -> IdleSocket {
        IdleSocket {
            sockets: self.clone(),
            index: slot as usize,
        }
    }
}

/// One slot's place in [`IdleSockets`].
pub struct IdleSocket {
    sockets: IdleSockets,
    index: usize,
}

impl IdleSocket {
    fn cell(&self, index: usize) -> Option<std::sync::MutexGuard<'_, Option<Parked>>> {
        // A poisoned cell holds a whole socket or none: still usable.
        self.sockets
            .cells
            .get(index)
            .map(|cell| cell.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Closes every socket of the backend parked longer than [`KEEP_IDLE`].
    fn close_stale(&self) {
        for index in 0..self.sockets.cells.len() {
            if let Some(mut cell) = self.cell(index) {
                if cell
                    .as_ref()
                    .is_some_and(|p| p.at.elapsed() >= self.sockets.keep)
                {
                    *cell = None;
                }
            }
        }
    }

    /// The slot's socket, if one is left, fresh and still open.
    async fn take(&self) -> Option<BackendSocket> {
        self.close_stale();
        let parked = self.cell(self.index)?.take()?;
        // Sent before awaiting: the task hands the socket back at once.
        let _ = parked.stop.send(());
        parked.socket.await.ok().flatten()
    }

    /// Parks `socket` for the slot's next job, read meanwhile. Outside a
    /// runtime (the server stopping) it just closes.
    fn put(&self, socket: BackendSocket) {
        self.close_stale();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (stop, told) = oneshot::channel();
        let parked = Parked {
            stop,
            socket: runtime.spawn(drain(socket, told)),
            at: Instant::now(),
        };
        if let Some(mut cell) = self.cell(self.index) {
            *cell = Some(parked);
        }
    }
}

pub struct ComfyJob {
    client: ComfyClient,
    client_id: String,
    prompt_id: String,
    /// Open once the job was submitted or re-attached (boxed: a socket is
    /// large, and sessions move between tasks).
    session: Option<Box<ComfySession>>,
    /// Events owed to the runner after [`stop`](Self::stop) took back a
    /// job that had not started: ComfyUI says nothing of those.
    after_stop: VecDeque<SessionEvent>,
    /// Where the slot keeps its socket between jobs (`None` outside the
    /// slots: the warm-up).
    idle: Option<IdleSocket>,
    /// The socket carried the prompt's last frame: nothing of this job is
    /// left on it, so the slot's next job may use it.
    reusable: bool,
}

impl ComfyJob {
    pub fn new(
        client: ComfyClient,
        client_id: String,
        prompt_id: String,
        idle: Option<IdleSocket>,
    ) -> Self {
        Self {
            client,
            client_id,
            prompt_id,
            session: None,
            after_stop: VecDeque::new(),
            idle,
            reusable: false,
        }
    }

    pub fn can_reattach(&self) -> bool {
        true
    }

    /// Listens as the slot's client: on the socket the slot's previous job
    /// left, or a new one.
    async fn open(&mut self) -> Result<&mut ComfySession, SessionError> {
        let left = match &self.idle {
            Some(idle) => idle.take().await,
            None => None,
        };
        let session = match left {
            Some(socket) => ComfySession::adopt(
                self.client.clone(),
                self.client_id.clone(),
                self.prompt_id.clone(),
                socket,
            ),
            None => {
                ComfySession::open(
                    self.client.clone(),
                    self.client_id.clone(),
                    self.prompt_id.clone(),
                )
                .await?
            }
        };
        Ok(self.session.insert(Box::new(session)))
    }

    fn opened(&mut self) -> Result<&mut ComfySession, SessionError> {
        self.session
            .as_deref_mut()
            .ok_or_else(|| SessionError::Lost("the job was never sent to this backend".into()))
    }

    /// Listens first, so no event of the prompt comes before the socket.
    pub async fn submit(&mut self, job: &Submission) -> Result<(), SessionError> {
        let session = self.open().await?;
        for (name, bytes) in &job.inputs {
            session.client().upload_input(name, bytes.clone()).await?;
        }
        session
            .submit(
                &job.prompt,
                &job.extra_data,
                job.partial_execution_targets.as_deref(),
            )
            .await?;
        Ok(())
    }

    pub async fn reattach(&mut self) -> Result<(), SessionError> {
        self.open().await.map(drop)
    }

    pub async fn next(&mut self) -> Result<SessionEvent, SessionError> {
        if let Some(event) = self.after_stop.pop_front() {
            return Ok(event);
        }
        match self.opened()?.next().await {
            Ok(Incoming::Event { kind, data, raw }) => Ok(SessionEvent::Event { kind, data, raw }),
            Ok(Incoming::Binary(bytes)) => Ok(SessionEvent::Binary(bytes)),
            Ok(Incoming::Done { .. }) => {
                self.reusable = true;
                Ok(SessionEvent::Done { outcome: None })
            }
            Err(lost) => Err(SessionError::Lost(lost.0)),
        }
    }

    pub async fn reconnect(&mut self) -> Result<(), SessionError> {
        self.reusable = false;
        self.opened()?.reopen().await.map_err(Into::into)
    }

    pub async fn status(&mut self) -> Result<JobStatus, SessionError> {
        self.opened()?.status().await.map_err(Into::into)
    }

    pub async fn fetch_output(&mut self, file: &OutputFile) -> Result<Vec<u8>, SessionError> {
        self.client
            .download(&file.filename, &file.subfolder, &file.kind)
            .await
            .map_err(Into::into)
    }

    /// Takes the job back. A running job is interrupted and ComfyUI tells
    /// the rest; one still waiting in ComfyUI's queue just leaves it, so
    /// its interruption is told here.
    pub async fn stop(&mut self) {
        if let Err(e) = cancel_prompt(&self.client, &self.prompt_id).await {
            tracing::warn!(error = %e, "could not take a job back from its backend");
            return;
        }
        let Some(session) = self.session.as_ref() else {
            return;
        };
        // Asked twice: a job that ends between the history and the queue
        // answers looks unknown once.
        let unknown = |answer| matches!(answer, Ok(JobStatus::Unknown));
        if unknown(session.status().await) && unknown(session.status().await) {
            self.after_stop
                .extend(SessionEvent::interrupted(&self.prompt_id));
        }
    }
}

impl Drop for ComfyJob {
    /// Leaves the socket to the slot's next job when this job's last frame
    /// came on it; any other socket closes.
    fn drop(&mut self) {
        if !self.reusable {
            return;
        }
        if let (Some(idle), Some(session)) = (&self.idle, self.session.take()) {
            idle.put(session.into_socket());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use tokio::net::TcpListener;

    /// A WebSocket server that counts the sockets it sees close.
    async fn server() -> (String, tokio::sync::mpsc::UnboundedReceiver<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/ws", listener.local_addr().unwrap());
        let (closed, closes) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let closed = closed.clone();
                tokio::spawn(async move {
                    let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
                    while let Some(Ok(_)) = ws.next().await {}
                    let _ = closed.send(());
                });
            }
        });
        (url, closes)
    }

    async fn socket(url: &str) -> BackendSocket {
        tokio_tungstenite::connect_async(url).await.unwrap().0
    }

    /// A server that sends `frames` frames of 2 KiB to its one client, and
    /// says when the last one was sent.
    async fn chatty_server(frames: usize) -> (String, tokio::sync::oneshot::Receiver<()>) {
        use futures_util::SinkExt;
        use tokio_tungstenite::tungstenite::Message;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/ws", listener.local_addr().unwrap());
        let (sent, all_sent) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
            let status = "s".repeat(2048);
            for _ in 0..frames {
                ws.send(Message::Text(status.clone().into())).await.unwrap();
            }
            let _ = sent.send(());
            // Stay open for the next job.
            while let Some(Ok(_)) = ws.next().await {}
        });
        (url, all_sent)
    }

    /// ComfyUI tells every socket about every change of its queue: a
    /// parked socket is read meanwhile, so 8 MiB of that (far more than
    /// the sockets' buffers) never holds the server up.
    #[tokio::test]
    async fn a_parked_socket_never_holds_the_backend_up() {
        let (url, all_sent) = chatty_server(4096).await;
        let sockets = IdleSockets::keeping(1, Duration::from_secs(3600));
        sockets.slot(0).put(socket(&url).await);
        tokio::time::timeout(Duration::from_secs(60), all_sent)
            .await
            .expect("the server sent everything while the socket was parked")
            .expect("the server runs");
        assert!(sockets.slot(0).take().await.is_some(), "still open");
    }

    #[tokio::test]
    async fn a_parked_socket_serves_the_next_job_while_fresh() {
        let (url, _closes) = server().await;
        let sockets = IdleSockets::keeping(1, Duration::from_secs(3600));
        sockets.slot(0).put(socket(&url).await);
        assert!(sockets.slot(0).take().await.is_some(), "taken back");
        assert!(sockets.slot(0).take().await.is_none(), "by one job only");
    }

    /// A socket parked too long is closed (nobody reads it) when anything
    /// is taken or put on the backend, whatever its slot.
    #[tokio::test]
    async fn a_socket_parked_too_long_is_closed() {
        let (url, mut closes) = server().await;
        let sockets = IdleSockets::keeping(2, Duration::ZERO);
        sockets.slot(1).put(socket(&url).await);
        assert!(sockets.slot(0).take().await.is_none());
        // Bounded, so a socket left open fails the test instead of hanging it.
        tokio::time::timeout(Duration::from_secs(30), closes.recv())
            .await
            .expect("slot 1's stale socket closed")
            .expect("the server runs");
        assert!(sockets.slot(1).take().await.is_none(), "and not reused");
    }
}
