//! A load balancer for tests: a TCP proxy on a loopback port that hands
//! each new connection to the next gateway in turn (round robin, no
//! stickiness), so a participant's requests and sockets land on every
//! gateway.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::net::{TcpListener, TcpStream};

pub struct Balancer {
    pub url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Balancer {
    /// Balances over `backends` (`http://host:port`, each).
    pub async fn start(backends: &[String]) -> Balancer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let targets: Arc<Vec<String>> = Arc::new(
            backends
                .iter()
                .map(|b| {
                    b.trim_start_matches("http://")
                        .trim_end_matches('/')
                        .to_string()
                })
                .collect(),
        );
        let next = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                let target = targets[next.fetch_add(1, Ordering::Relaxed) % targets.len()].clone();
                connections.spawn(async move {
                    let Ok(mut server) = TcpStream::connect(&target).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                });
                while connections.try_join_next().is_some() {}
            }
        });
        Balancer { url, task }
    }
}
