//! A job on a stock ComfyUI (or the simulator), through the protocol
//! crate's [`ComfySession`]: inputs uploaded under content-addressed names,
//! the prompt queued under the job's id, its frames followed on the slot's
//! socket.

use std::collections::VecDeque;

use comfyume_protocol::session::cancel_prompt;
use comfyume_protocol::{ComfyClient, ComfySession, Incoming, JobStatus, OutputFile};

use super::session::{SessionError, SessionEvent, Submission};

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
}

impl ComfyJob {
    pub fn new(client: ComfyClient, client_id: String, prompt_id: String) -> Self {
        Self {
            client,
            client_id,
            prompt_id,
            session: None,
            after_stop: VecDeque::new(),
        }
    }

    pub fn can_reattach(&self) -> bool {
        true
    }

    async fn open(&mut self) -> Result<&mut ComfySession, SessionError> {
        let session = ComfySession::open(
            self.client.clone(),
            self.client_id.clone(),
            self.prompt_id.clone(),
        )
        .await?;
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
            Ok(Incoming::Done { .. }) => Ok(SessionEvent::Done { outcome: None }),
            Err(lost) => Err(SessionError::Lost(lost.0)),
        }
    }

    pub async fn reconnect(&mut self) -> Result<(), SessionError> {
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
