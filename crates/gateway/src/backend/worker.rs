//! A job on a `comfyume worker`: one streamed request carries the prompt
//! and its inputs and brings back every event and output file. Nothing
//! survives the request, so a broken stream cannot be resumed or asked
//! about: the job is lost and the dispatcher runs it again. Dropping the
//! stream makes the worker cancel the job.

use std::collections::VecDeque;
use std::pin::Pin;

use comfyume_protocol::frames::{self, Frame as Classified};
use comfyume_protocol::worker::stream::Frame;
use comfyume_protocol::worker::{InputFile, RunRequest, WorkerClient, WorkerError};
use comfyume_protocol::{JobStatus, Outcome, OutputFile};
use futures_util::{Stream, StreamExt};

use super::session::{SessionError, SessionEvent, Submission};

type Frames = Pin<Box<dyn Stream<Item = Result<Frame, WorkerError>> + Send>>;

pub struct WorkerJob {
    client: WorkerClient,
    prompt_id: String,
    stream: Option<Frames>,
    /// Between the job's `execution_start` and its end: binary frames
    /// that name no prompt are its own.
    executing: bool,
    told_cold: bool,
    /// Events owed to the runner after [`stop`](Self::stop) dropped the
    /// stream: the interruption, as ComfyUI would tell it, and the end.
    after_stop: VecDeque<SessionEvent>,
}

impl WorkerJob {
    pub fn new(client: WorkerClient, prompt_id: String) -> Self {
        Self {
            client,
            prompt_id,
            stream: None,
            executing: false,
            told_cold: false,
            after_stop: VecDeque::new(),
        }
    }

    /// The stream (and with it the job on the worker) ended with the
    /// gateway that held it.
    pub fn can_reattach(&self) -> bool {
        false
    }

    pub async fn submit(&mut self, job: &Submission) -> Result<(), SessionError> {
        let job_id = uuid::Uuid::parse_str(&self.prompt_id)
            .map_err(|e| SessionError::Invalid(format!("the job id is not a UUID: {e}")))?;
        let prompt = job
            .prompt
            .as_object()
            .cloned()
            .ok_or_else(|| SessionError::Invalid("the prompt is not a JSON object".into()))?;
        let extra_data = match &job.extra_data {
            serde_json::Value::Object(m) => m.clone(),
            serde_json::Value::Null => Default::default(),
            _ => {
                return Err(SessionError::Invalid(
                    "extra_data is not a JSON object".into(),
                ));
            }
        };
        let request = RunRequest {
            job_id,
            prompt,
            extra_data,
            partial_execution_targets: job.partial_execution_targets.clone(),
            inputs: job
                .inputs
                .iter()
                .map(|(name, bytes)| InputFile::with_data(name.clone(), bytes.clone()))
                .collect(),
        };
        // The request goes out on the first read of the stream.
        self.stream = Some(Box::pin(self.client.run(&request)));
        Ok(())
    }

    pub async fn reattach(&mut self) -> Result<(), SessionError> {
        Err(SessionError::Lost(
            "a worker's job cannot be followed again after a restart".into(),
        ))
    }

    pub async fn next(&mut self) -> Result<SessionEvent, SessionError> {
        if let Some(event) = self.after_stop.pop_front() {
            return Ok(event);
        }
        let Some(stream) = self.stream.as_mut() else {
            return Err(SessionError::Lost("the worker's stream is closed".into()));
        };
        loop {
            let frame = match stream.next().await {
                None => {
                    return Err(SessionError::Lost(
                        "the worker's stream ended before the job did".into(),
                    ));
                }
                Some(Err(e)) => return Err(worker_error(e)),
                Some(Ok(frame)) => frame,
            };
            match frame {
                Frame::Progress(p) => {
                    let cold =
                        p.get("state").and_then(|s| s.as_str()) == Some("waiting_for_comfyui");
                    if cold && !std::mem::replace(&mut self.told_cold, true) {
                        return Ok(SessionEvent::ColdStart);
                    }
                }
                Frame::Text(text) => {
                    // The final `executing` is followed by END, which says
                    // how the job ended.
                    if let Classified::Event { kind, data } =
                        frames::classify(&text, &self.prompt_id)
                    {
                        match kind.as_str() {
                            "execution_start" => self.executing = true,
                            k if Outcome::of_message(k).is_some() => self.executing = false,
                            _ => {}
                        }
                        return Ok(SessionEvent::Event {
                            kind,
                            data,
                            raw: text,
                        });
                    }
                }
                Frame::Binary(bytes) => {
                    if frames::binary_is_ours(&bytes, &self.prompt_id, self.executing) {
                        return Ok(SessionEvent::Binary(bytes));
                    }
                }
                Frame::File { header, data } => {
                    let file = OutputFile {
                        filename: header.filename,
                        subfolder: header.subfolder,
                        kind: header.kind,
                    };
                    return Ok(SessionEvent::File {
                        file,
                        data: data.to_vec(),
                    });
                }
                Frame::End { outcome } => {
                    self.stream = None;
                    return Ok(SessionEvent::Done {
                        outcome: Some(outcome),
                    });
                }
                Frame::Error { message, rejected } => {
                    self.stream = None;
                    return Err(match rejected {
                        Some(body) => SessionError::Rejected(body),
                        None => SessionError::Failed(format!("the worker reported: {message}")),
                    });
                }
            }
        }
    }

    pub async fn reconnect(&mut self) -> Result<(), SessionError> {
        Err(SessionError::Lost(
            "a worker's stream cannot be resumed".into(),
        ))
    }

    /// A worker cannot be asked about a job outside its stream, so the
    /// stream is the answer: open, the worker holds the job (it sends a
    /// heartbeat every 15 s, and a stream silent for 90 s breaks); closed,
    /// the job is gone with it.
    pub async fn status(&mut self) -> Result<JobStatus, SessionError> {
        Ok(if self.stream.is_some() {
            JobStatus::Queued
        } else {
            JobStatus::Unknown
        })
    }

    pub async fn fetch_output(&mut self, file: &OutputFile) -> Result<Vec<u8>, SessionError> {
        Err(SessionError::Failed(format!(
            "the worker did not send the output file '{}' ahead of its result",
            file.filename
        )))
    }

    pub async fn stop(&mut self) {
        if self.stream.take().is_some() {
            self.after_stop
                .extend(SessionEvent::interrupted(&self.prompt_id));
        }
    }
}

/// A worker's refusal or breakage: only a malformed request is the job's
/// fault; a busy worker never started it.
fn worker_error(e: WorkerError) -> SessionError {
    match e {
        WorkerError::Busy => SessionError::Busy(e.to_string()),
        WorkerError::BadRequest(_) => {
            SessionError::Invalid(format!("The GPU worker could not run this prompt: {e}"))
        }
        other => SessionError::Failed(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use comfyume_protocol::Secret;
    use serde_json::json;

    use super::*;

    /// The stream is the worker's only account of the job: open, the job is
    /// held (a silent stretch is a long node, not a loss); stopped, gone.
    #[tokio::test]
    async fn the_open_stream_is_the_jobs_status() {
        let client = WorkerClient::new(
            "http://127.0.0.1:9",
            Secret::new("t"),
            reqwest::Client::new(),
        );
        let mut job = WorkerJob::new(client, uuid::Uuid::new_v4().to_string());
        assert_eq!(job.status().await, Ok(JobStatus::Unknown), "not sent yet");
        let submission = Submission {
            prompt: json!({"1": {"class_type": "SaveImage", "inputs": {}}}),
            inputs: Vec::new(),
            extra_data: json!({}),
            partial_execution_targets: None,
        };
        job.submit(&submission).await.unwrap();
        assert_eq!(job.status().await, Ok(JobStatus::Queued));
        job.stop().await;
        assert_eq!(job.status().await, Ok(JobStatus::Unknown));
        assert!(matches!(
            job.next().await,
            Ok(SessionEvent::Event { kind, .. }) if kind == "execution_interrupted"
        ));
        assert_eq!(
            job.next().await,
            Ok(SessionEvent::Done {
                outcome: Some(Outcome::Interrupted)
            })
        );
    }
}
