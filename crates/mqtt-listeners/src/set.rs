//! A set of listeners served together: the original broker's `listeners.Listeners`, for the
//! facade's `add_listener`.

use std::sync::Arc;

use mqtt_broker::Server;
use parking_lot::Mutex;
use tokio::task::JoinHandle;
use tracing::warn;

use crate::{Listener, ListenerError};

/// The task serving one listener, by the listener's id.
type ServingTask = (String, JoinHandle<Result<(), ListenerError>>);

/// Listeners by id, each served on its own task.
#[derive(Debug, Default)]
pub struct Listeners {
    listeners: Mutex<Vec<Arc<dyn Listener>>>,
    tasks: Mutex<Vec<ServingTask>>,
}

impl Listeners {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a listener; its id must be new.
    pub fn add(&self, listener: Arc<dyn Listener>) -> Result<(), ListenerError> {
        let mut listeners = self.listeners.lock();
        if listeners.iter().any(|known| known.id() == listener.id()) {
            return Err(ListenerError::Config(format!(
                "listener id {} is already in use",
                listener.id()
            )));
        }
        listeners.push(listener);
        Ok(())
    }

    /// The listener with this id.
    pub fn get(&self, id: &str) -> Option<Arc<dyn Listener>> {
        self.listeners
            .lock()
            .iter()
            .find(|listener| listener.id() == id)
            .cloned()
    }

    /// Every listener, in the order added.
    pub fn all(&self) -> Vec<Arc<dyn Listener>> {
        self.listeners.lock().clone()
    }

    /// How many listeners there are.
    pub fn len(&self) -> usize {
        self.listeners.lock().len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Serves every listener not yet served, each on its own task. Must be called within a
    /// Tokio runtime.
    pub fn serve_all(&self, server: &Server) {
        let listeners = self.all();
        let mut tasks = self.tasks.lock();
        for listener in listeners {
            let id = listener.id().to_owned();
            if tasks.iter().any(|(served, _)| *served == id) {
                continue;
            }
            let server = server.clone();
            let task = tokio::spawn(async move { listener.serve(server).await });
            tasks.push((id, task));
        }
    }

    /// Closes every listener and waits for their accept loops to end. Connections already
    /// accepted go on until the server closes them.
    pub async fn close_all(&self) {
        for listener in self.all() {
            listener.close();
        }
        let tasks = std::mem::take(&mut *self.tasks.lock());
        for (id, task) in tasks {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => warn!(listener = %id, %error, "listener failed"),
                Err(error) => warn!(listener = %id, %error, "listener task failed"),
            }
        }
    }
}
