//! What answers the live view: the model in this process or one behind an endpoint. Both take
//! the same [`Request`]s and send the same [`EngineEvent`]s.

use std::sync::mpsc::Receiver;
use std::thread::JoinHandle;

use crate::engine::{Engine, EngineEvent, Request};
use crate::remote::Remote;

pub enum Backend {
    Local(Box<Engine>),
    Remote(Remote),
}

impl Backend {
    /// Runs requests on a thread until the request channel closes or `emit` returns false.
    pub fn spawn(
        self,
        requests: Receiver<Request>,
        emit: impl Fn(EngineEvent) -> bool + Send + 'static,
    ) -> JoinHandle<()> {
        match self {
            Backend::Local(engine) => engine.spawn(requests, emit),
            Backend::Remote(remote) => remote.spawn(requests, emit),
        }
    }
}
