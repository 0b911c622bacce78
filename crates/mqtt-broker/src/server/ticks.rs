//! What runs on the server's clock: `$SYS` topics and the timers (Will delay, session expiry,
//! retained message expiry).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use mqtt_packets::QoS;
use tokio::time::Instant;
use tracing::{debug, info};

use super::Server;

use crate::hooks::HookEvents;
use crate::inline::InlineClient;
use crate::session::Session;
use crate::storage::{self, StorageEvent};
use crate::sys::{self};
use crate::timers::TimerEvent;

impl Server {
    /// Publishes the `$SYS` topics (retained, so that a new subscriber gets them at once) and
    /// calls `on_sys_info_tick`, every `sys_topic_resend_interval`.
    pub(crate) async fn run_sys_ticks(&self) {
        let mut interval = tokio::time::interval(self.inner.options.sys_topic_resend_interval);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = interval.tick() => {}
                () = self.shutdown_signal() => return,
            }
            if self.inner.closing.load(Ordering::SeqCst) {
                return;
            }
            self.publish_sys_topics().await;
            for hook in self.inner.hooks.with(HookEvents::ON_SYS_INFO_TICK) {
                hook.on_sys_info_tick(&self.inner.info);
            }
        }
    }

    /// Refreshes the sampled counters and publishes every `$SYS` topic once.
    pub(crate) async fn publish_sys_topics(&self) {
        let info = &self.inner.info;
        let sessions: Vec<Arc<Session>> = self.inner.sessions.lock().values().cloned().collect();
        // A scan of the sessions once per interval (not per message) for the inflight total.
        let queued: usize = sessions
            .iter()
            .map(|session| session.state.lock().outbound.pending_len())
            .sum();
        info.queued.store(queued as u64, Ordering::Relaxed);
        let inflight: usize = sessions
            .iter()
            .map(|session| session.state.lock().outbound.inflight_len())
            .sum();
        drop(sessions);
        info.inflight.store(inflight as u64, Ordering::Relaxed);
        info.memory
            .store(sys::resident_memory().await, Ordering::Relaxed);
        info.tasks.store(
            tokio::runtime::Handle::current()
                .metrics()
                .num_alive_tasks() as u64,
            Ordering::Relaxed,
        );
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_secs())
            .unwrap_or_default();
        let inline = InlineClient::new(self.clone());
        for (topic, value) in sys::topics(&info.snapshot(), now) {
            if let Err(error) = inline.publish(topic, value, true, QoS::AtMostOnce) {
                debug!(%error, topic, "cannot publish $SYS topic");
            }
        }
    }

    pub(crate) async fn run_timers(&self) {
        loop {
            tokio::select! {
                () = self.inner.timers.wait() => {}
                () = self.shutdown_signal() => return,
            }
            if self.inner.closing.load(Ordering::SeqCst) {
                return;
            }
            for event in self.inner.timers.due(Instant::now()) {
                self.fire(event);
            }
        }
    }

    pub(crate) fn fire(&self, event: TimerEvent) {
        let inner = &self.inner;
        match event {
            TimerEvent::RetainedExpiry { topic } => {
                // Only if the message stored now is the one that expired (not a newer one).
                let now = Instant::now();
                if inner
                    .remove_retained_if(&topic, |message| message.is_expired(now))
                    .is_some()
                {
                    sys::sub(&inner.info.retained, u64::from(!topic.starts_with('$')));
                    if !topic.starts_with('$') {
                        inner
                            .hooks
                            .storage(&StorageEvent::RetainedCleared { topic: &topic });
                    }
                    for hook in inner.hooks.with(HookEvents::ON_RETAINED_EXPIRED) {
                        hook.on_retained_expired(&topic);
                    }
                }
            }
            TimerEvent::SessionExpiry {
                client_id,
                generation,
            } => {
                let Some(session) = inner.sessions.lock().get(&client_id).cloned() else {
                    return;
                };
                let Some(ended) = self.end_session(&session, generation) else {
                    return;
                };
                // The session ends, so a pending delayed Will goes now [MQTT-3.1.2-8].
                if let Some(will) = ended.will {
                    self.publish_will(&ended.client, will);
                }
                info!(client_id = %client_id, "session expired");
                for hook in inner.hooks.with(HookEvents::ON_CLIENT_EXPIRED) {
                    hook.on_client_expired(&ended.client);
                }
            }
            TimerEvent::WillDelay {
                client_id,
                generation,
            } => {
                let Some(session) = inner.sessions.lock().get(&client_id).cloned() else {
                    return;
                };
                let (client, will) = {
                    let mut state = session.state.lock();
                    if state.connection.is_some() || state.last_generation != generation {
                        return;
                    }
                    let will = state.will.take();
                    if state.persist && will.is_some() {
                        // The stored session no longer has a pending Will.
                        let mut stored = storage::stored_client(&client_id, &state, false);
                        stored.expires_at_unix = None;
                        inner.hooks.storage(&StorageEvent::Session(&stored));
                    }
                    (state.client.clone(), will)
                };
                if let (Some(client), Some(will)) = (client, will) {
                    self.publish_will(&client, will);
                }
            }
        }
    }
}
