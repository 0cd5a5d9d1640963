//! Steady background traffic through Envoy, recording who answered each request and when,
//! so a test can watch routing change over time.

use crate::client::{connect, extract_image};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// One answer: when it arrived and who served it (or `error:<code>`).
#[derive(Clone, Debug)]
pub struct Answer {
    pub at: Instant,
    pub served_by: String,
    pub decision: Option<String>,
}

/// Clients sending back-to-back requests until dropped.
pub struct Traffic {
    answers: Arc<Mutex<Vec<Answer>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Traffic {
    /// Starts `concurrency` clients (each on its own connection) sending `headers`.
    pub async fn start_url(url: &str, headers: &[(&str, &str)], concurrency: usize) -> Traffic {
        Self::start_with_image(url, headers, concurrency, Vec::new()).await
    }

    /// Like [`Traffic::start_url`], each request carrying `image`.
    ///
    /// Open loop: a request leaves every 10 ms whatever happened to earlier ones, so a
    /// slow target does not hold the traffic back and a change of route shows as soon as
    /// it happens. `connections` connections are used in turn.
    pub async fn start_with_image(url: &str, headers: &[(&str, &str)], connections: usize, image: Vec<u8>) -> Traffic {
        let answers = Arc::new(Mutex::new(Vec::new()));
        let headers: Vec<(String, String)> = headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let mut clients = Vec::new();
        for _ in 0..connections.max(1) {
            clients.push(connect(url).await);
        }
        let sink = answers.clone();
        let pacer = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            for i in 0usize.. {
                tick.tick().await;
                let mut client = clients[i % clients.len()].clone();
                let (headers, image, sink) = (headers.clone(), image.clone(), sink.clone());
                tokio::spawn(async move {
                    let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                    let (served_by, decision) = match extract_image(&mut client, &h, image).await {
                        Ok(a) => {
                            let d = a.decision();
                            (a.served_by, d)
                        }
                        Err(s) => (format!("error:{:?}", s.code()), None),
                    };
                    sink.lock().unwrap().push(Answer { at: Instant::now(), served_by, decision });
                });
            }
        });
        Traffic { answers, tasks: vec![pacer] }
    }

    pub async fn start(stack: &crate::AbStack, headers: &[(&str, &str)], concurrency: usize) -> Traffic {
        Self::start_url(&stack.envoy.url(), headers, concurrency).await
    }

    /// Waits (up to 20 s) for an answer arriving from now on, served by someone satisfying
    /// `pred`; returns its arrival time.
    pub async fn wait_for(&self, what: &str, pred: impl Fn(&str) -> bool) -> Instant {
        self.wait_for_answer(what, |a| pred(&a.served_by)).await
    }

    /// Waits (up to 20 s) for an answer arriving from now on that satisfies `pred`.
    pub async fn wait_for_answer(&self, what: &str, pred: impl Fn(&Answer) -> bool) -> Instant {
        let from = Instant::now();
        crate::eventually(what, Duration::from_secs(20), async || {
            self.answers.lock().unwrap().iter().find(|a| a.at >= from && pred(a)).map(|a| a.at)
        })
        .await
    }

    /// Waits (up to 30 s) until the last `n` answers all satisfy `pred`.
    pub async fn wait_all_recent(&self, what: &str, pred: impl Fn(&str) -> bool, n: usize) {
        let from = Instant::now();
        crate::eventually(what, Duration::from_secs(30), async || {
            let answers = self.answers.lock().unwrap();
            let recent: Vec<&Answer> = answers.iter().filter(|a| a.at >= from).collect();
            (recent.len() >= n && recent[recent.len() - n..].iter().all(|a| pred(&a.served_by))).then_some(())
        })
        .await
    }

    /// Every answer so far.
    pub fn answers(&self) -> Vec<Answer> {
        self.answers.lock().unwrap().clone()
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}
