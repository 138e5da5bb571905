//! librdkafka's mock cluster: real Kafka-protocol brokers on loopback, in this process, for
//! tests and benchmarks (produce, fetch, consumer groups, offset commits, create topics). The
//! cluster handle is not thread-safe, so it lives on its own thread and is driven by messages.

use std::sync::mpsc::{channel, Sender};
use std::thread::JoinHandle;

use rdkafka::mocking::MockCluster;

use crate::error::{KafkaError, Result};

enum Cmd {
    CreateTopic(String, usize, usize, Sender<Result<()>>),
    BrokerUp(i32, bool, Sender<Result<()>>),
}

pub struct Mock {
    bootstrap: String,
    tx: Option<Sender<Cmd>>,
    thread: Option<JoinHandle<()>>,
}

impl Mock {
    /// Start `brokers` mock brokers.
    pub fn start(brokers: usize) -> Result<Mock> {
        let (tx, rx) = channel::<Cmd>();
        let (ready_tx, ready_rx) = channel::<Result<String>>();
        let thread = std::thread::Builder::new()
            .name("riverbed-kafka-mock".into())
            .spawn(move || {
                let cluster = match MockCluster::new(brokers as i32) {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = ready_tx.send(Err(KafkaError::Other(format!(
                            "cannot start the mock cluster: {e}"
                        ))));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(cluster.bootstrap_servers()));
                for cmd in rx {
                    match cmd {
                        Cmd::CreateTopic(name, parts, rf, back) => {
                            let r = cluster
                                .create_topic(&name, parts as i32, rf as i32)
                                .map_err(|e| {
                                    KafkaError::Other(format!("cannot create topic '{name}': {e}"))
                                });
                            let _ = back.send(r);
                        }
                        Cmd::BrokerUp(id, up, back) => {
                            let r = if up {
                                cluster.broker_up(id)
                            } else {
                                cluster.broker_down(id)
                            };
                            let _ = back.send(
                                r.map_err(|e| KafkaError::Other(format!("broker {id}: {e}"))),
                            );
                        }
                    }
                }
            })
            .map_err(|e| KafkaError::Other(format!("cannot start the mock cluster: {e}")))?;
        let bootstrap = ready_rx
            .recv()
            .map_err(|_| KafkaError::Other("the mock cluster did not start".into()))??;
        Ok(Mock {
            bootstrap,
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    pub fn bootstrap_servers(&self) -> String {
        self.bootstrap.clone()
    }

    fn call(&self, make: impl FnOnce(Sender<Result<()>>) -> Cmd) -> Result<()> {
        let (back, rx) = channel();
        self.tx
            .as_ref()
            .ok_or_else(|| KafkaError::Other("the mock cluster is stopped".into()))?
            .send(make(back))
            .map_err(|_| KafkaError::Other("the mock cluster is stopped".into()))?;
        rx.recv()
            .map_err(|_| KafkaError::Other("the mock cluster is stopped".into()))?
    }

    /// Create a topic directly on the mock (as `Kafka::create_topic` does through the admin
    /// API).
    pub fn create_topic(&self, name: &str, partitions: usize, replication: usize) -> Result<()> {
        self.call(|b| Cmd::CreateTopic(name.to_string(), partitions, replication, b))
    }

    /// Take broker `id` (1-based) down or bring it back up.
    pub fn set_broker_up(&self, id: i32, up: bool) -> Result<()> {
        self.call(|b| Cmd::BrokerUp(id, up, b))
    }
}

impl Drop for Mock {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
