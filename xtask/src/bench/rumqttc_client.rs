//! The fan rows with `rumqttc` 0.24 (MQTT 3.1.1) as publishers and subscribers, configured as a
//! typical user would: an `AsyncClient` with a request channel of 100 and an `EventLoop` polled
//! by a task of its own, up to 100 QoS 1/2 messages in flight, keep alive 30 s, clean session.
//! rumqttc 0.24 has no TCP_NODELAY option (`NetworkOptions` offers buffer sizes, a connection
//! timeout and a bind device), so Nagle's algorithm stays on, as users get it. It writes every
//! request it takes from the channel with a flush of its own, so the clients, not the broker,
//! set the rate: these rows show what users' clients see, next to our own client's rows.
//!
//! Every message carries its publisher and sequence number (see [`Tally`]), so that loss and
//! duplicates are counted. A connection error ends that client's part (rumqttc would reconnect
//! with a clean session, which would hide what the error lost): it is reported with the row.
//! Nothing waits forever: a subscriber that receives nothing new for [`IDLE`] stops, and what
//! did not come is reported as lost.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, MqttOptions, Outgoing,
    Packet, QoS, SubscribeReasonCode,
};
use tokio::sync::watch;
use tokio::time::timeout;

use super::scenarios::Measured;
use super::tally::{Tally, tag};

/// A client that makes no progress for this long stops; what did not arrive is lost.
const IDLE: Duration = Duration::from_secs(10);
/// The longest a row may take, however slowly messages keep trickling in.
const DEADLINE: Duration = Duration::from_secs(180);
/// The capacity of each `AsyncClient`'s request channel.
const CAPACITY: usize = 100;
/// QoS 1/2 messages each client keeps unacknowledged at most (`set_inflight`).
const INFLIGHT: u16 = 100;

/// rumqttc's name for a QoS.
fn qos_of(qos: mqtt_packets::QoS) -> QoS {
    match qos {
        mqtt_packets::QoS::AtMostOnce => QoS::AtMostOnce,
        mqtt_packets::QoS::AtLeastOnce => QoS::AtLeastOnce,
        mqtt_packets::QoS::ExactlyOnce => QoS::ExactlyOnce,
    }
}

/// Connects a client with the users' settings and waits for a successful CONNACK.
async fn connect(port: u16, id: &str, payload: usize) -> Result<(AsyncClient, EventLoop)> {
    let mut options = MqttOptions::new(id, "127.0.0.1", port);
    options
        .set_keep_alive(Duration::from_secs(30))
        .set_clean_session(true)
        .set_inflight(INFLIGHT);
    // The default limit (10 KiB) is a user's to raise for larger messages.
    if payload + 1024 > 10 * 1024 {
        options.set_max_packet_size(payload + 1024, payload + 1024);
    }
    let (client, mut eventloop) = AsyncClient::new(options, CAPACITY);
    let event = timeout(IDLE, eventloop.poll())
        .await
        .with_context(|| format!("{id}: no CONNACK within {IDLE:?}"))?
        .with_context(|| format!("{id}: could not connect"))?;
    match event {
        Event::Incoming(Packet::ConnAck(ack)) if ack.code == ConnectReturnCode::Success => {
            Ok((client, eventloop))
        }
        other => bail!("{id}: expected a successful CONNACK, got {other:?}"),
    }
}

/// Subscribes to `filter` and polls the event loop until the SUBACK grants it.
async fn subscribe(
    client: &AsyncClient,
    eventloop: &mut EventLoop,
    id: &str,
    filter: &str,
    qos: QoS,
) -> Result<()> {
    client
        .subscribe(filter, qos)
        .await
        .with_context(|| format!("{id}: could not queue SUBSCRIBE"))?;
    let waiting = async {
        loop {
            match eventloop.poll().await? {
                Event::Incoming(Packet::SubAck(ack)) => return anyhow::Ok(ack),
                _ => continue,
            }
        }
    };
    let ack = timeout(IDLE, waiting)
        .await
        .with_context(|| format!("{id}: no SUBACK within {IDLE:?}"))??;
    if ack.return_codes.contains(&SubscribeReasonCode::Failure) {
        bail!("{id}: the broker refused the subscription");
    }
    Ok(())
}

/// What one subscriber received.
struct Received {
    tally: Tally,
    /// When the last new message arrived.
    last: Option<Instant>,
    /// The connection error that ended it, if any.
    error: Option<String>,
}

/// Counts the PUBLISH packets of one subscriber (rumqttc acknowledges QoS 1/2 itself) until
/// every expected message arrived and `stop` says the publishers are done (so that the last
/// QoS 2 handshakes complete), or nothing new came for [`IDLE`], or the row's deadline passed.
async fn receive(
    mut eventloop: EventLoop,
    mut tally: Tally,
    mut stop: watch::Receiver<bool>,
    deadline: Instant,
) -> Received {
    let mut last = None;
    let mut error = None;
    let mut progress = Instant::now();
    while Instant::now() < deadline {
        let complete = tally.complete();
        tokio::select! {
            _ = stop.wait_for(|&stop| stop), if complete => break,
            polled = timeout(IDLE, eventloop.poll()) => match polled {
                Ok(Ok(Event::Incoming(Packet::Publish(publish)))) => {
                    if tally.record(&publish.payload) {
                        let now = Instant::now();
                        last = Some(now);
                        progress = now;
                    }
                }
                Ok(Ok(_)) => {}
                Ok(Err(failure)) => {
                    error = Some(format!("subscriber: {failure}"));
                    break;
                }
                Err(_) if complete => {}
                Err(_) => break,
            },
        }
        // A stream of duplicates or pings is no progress either.
        if !tally.complete() && progress.elapsed() > IDLE {
            break;
        }
    }
    Received { tally, last, error }
}

/// What one publisher did.
struct Published {
    /// Messages handed to the client.
    sent: usize,
    /// When it was done (every message acknowledged at QoS 1/2, DISCONNECT written), if it was.
    finished: Option<Instant>,
    error: Option<String>,
}

/// Polls a publisher's event loop: counts PUBACK / PUBCOMP into `acked`; ends once the
/// DISCONNECT is written, or at the first connection error.
async fn drive(
    mut eventloop: EventLoop,
    acked: watch::Sender<usize>,
) -> Result<(), ConnectionError> {
    loop {
        match eventloop.poll().await? {
            Event::Incoming(Packet::PubAck(_) | Packet::PubComp(_)) => {
                acked.send_modify(|acked| *acked += 1);
            }
            Event::Outgoing(Outgoing::Disconnect) => return Ok(()),
            _ => {}
        }
    }
}

/// Publishes `messages` messages of `payload` bytes to `topic`, each awaited with
/// `AsyncClient::publish` as a user would, then waits for their acknowledgements (QoS 1/2) and
/// disconnects.
async fn publish(
    client: AsyncClient,
    eventloop: EventLoop,
    index: usize,
    topic: String,
    messages: usize,
    qos: QoS,
    payload: usize,
) -> Published {
    let (acked_tx, mut acked) = watch::channel(0usize);
    let mut driver = tokio::spawn(drive(eventloop, acked_tx));
    let mut sent = 0;
    let mut error = None;
    for sequence in 0..messages {
        let mut body = vec![0x5A_u8; payload.max(8)];
        if let Some(head) = body.get_mut(..8) {
            head.copy_from_slice(&tag(index, sequence));
        }
        match timeout(IDLE, client.publish(topic.as_str(), qos, false, body)).await {
            Ok(Ok(())) => sent += 1,
            Ok(Err(failure)) => {
                error = Some(format!("publish: {failure}"));
                break;
            }
            Err(_) => {
                error = Some(format!("publish: the client took no request for {IDLE:?}"));
                break;
            }
        }
    }
    if qos != QoS::AtMostOnce {
        while error.is_none() && *acked.borrow_and_update() < sent {
            match timeout(IDLE, acked.changed()).await {
                Ok(Ok(())) => {}
                // The event loop ended: its error is reported below.
                Ok(Err(_)) => break,
                Err(_) => {
                    error = Some(format!(
                        "{} of {sent} messages unacknowledged for {IDLE:?}",
                        sent - *acked.borrow()
                    ));
                }
            }
        }
    }
    let disconnected = timeout(IDLE, client.disconnect()).await;
    let finished = match timeout(IDLE, &mut driver).await {
        Ok(Ok(Ok(()))) if error.is_none() && matches!(disconnected, Ok(Ok(()))) => {
            Some(Instant::now())
        }
        Ok(Ok(Ok(()))) => None,
        // The cause of a failed publish above, if there was one.
        Ok(Ok(Err(failure))) => {
            error = Some(format!("publisher: {failure}"));
            None
        }
        Ok(Err(join)) => {
            error.get_or_insert_with(|| format!("publisher's event loop: {join}"));
            None
        }
        Err(_) => {
            driver.abort();
            error.get_or_insert_with(|| "publisher: DISCONNECT not written".to_owned());
            None
        }
    };
    Published {
        sent,
        finished,
        error,
    }
}

/// `publishers` rumqttc publishers (`messages` each) to `subscribers` rumqttc subscribers of one
/// filter matching every publisher's topic; every subscriber expects every message. The rate is
/// the distinct messages received in all over the time from the first publish to the last new
/// delivery (or the last publisher's end, if later), as in our own client's rows.
pub(crate) async fn fan(
    port: u16,
    publishers: usize,
    subscribers: usize,
    messages: usize,
    qos: mqtt_packets::QoS,
    payload: usize,
) -> Result<Measured> {
    let qos = qos_of(qos);
    let run = format!("{:x}", super::scenarios::rand_id());
    let filter = format!("bench/{run}/rumqttc/+");
    let mut receivers = Vec::new();
    for s in 0..subscribers {
        let id = format!("rs-{run}-{s}");
        let (client, mut eventloop) = connect(port, &id, payload).await?;
        subscribe(&client, &mut eventloop, &id, &filter, qos).await?;
        // The client lives as long as its event loop polls: dropping it would end the loop.
        receivers.push((client, eventloop));
    }
    let mut senders = Vec::new();
    for p in 0..publishers {
        senders.push(connect(port, &format!("rp-{run}-{p}"), payload).await?);
    }
    let (stop_tx, stop) = watch::channel(false);
    let start = Instant::now();
    let deadline = start + DEADLINE;
    let receiving: Vec<_> = receivers
        .into_iter()
        .map(|(client, eventloop)| {
            let tally = Tally::new(publishers, messages);
            let stop = stop.clone();
            tokio::spawn(async move {
                let received = receive(eventloop, tally, stop, deadline).await;
                drop(client);
                received
            })
        })
        .collect();
    let publishing: Vec<_> = senders
        .into_iter()
        .enumerate()
        .map(|(p, (client, eventloop))| {
            let topic = format!("bench/{run}/rumqttc/{p}");
            tokio::spawn(publish(client, eventloop, p, topic, messages, qos, payload))
        })
        .collect();
    let mut measured = Measured {
        expected: publishers * messages * subscribers,
        ..Measured::default()
    };
    let mut end = start;
    for task in publishing {
        let published = task.await?;
        measured.sent += published.sent;
        end = end.max(published.finished.unwrap_or(start));
        measured.errors.extend(published.error);
    }
    stop_tx.send_replace(true);
    for task in receiving {
        let received = task.await?;
        measured.received += received.tally.unique;
        measured.duplicates += received.tally.duplicates;
        end = end.max(received.last.unwrap_or(start));
        measured.errors.extend(received.error);
    }
    measured.seconds = end.duration_since(start).as_secs_f64().max(1e-9);
    measured.rate = measured.received as f64 / measured.seconds;
    Ok(measured)
}
