//! Encodes an MQTT 5 CONNECT with a Will, then decodes it again as a broker would, and shows
//! how a malformed packet is reported.
//!
//! Run with `cargo run -p mochi-examples --example packet_roundtrip`.

use bytes::BytesMut;
use mqtt_packets::{
    Connect, DecodeContext, MqttString, Packet, Protocol, QoS, Will, WillProperties, decode,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut connect = Connect::new(Protocol::V5, MqttString::new("sensor-17")?);
    connect.keep_alive = 30;
    connect.properties.session_expiry_interval = Some(3600);
    connect.will = Some(Will {
        topic: MqttString::new("sensors/17/status")?,
        payload: "offline".into(),
        qos: QoS::AtLeastOnce,
        retain: true,
        properties: WillProperties {
            will_delay_interval: Some(5),
            ..WillProperties::default()
        },
    });

    let mut wire = BytesMut::new();
    connect.encode(Protocol::V5, &mut wire)?;
    println!("CONNECT is {} bytes: {:02x?}", wire.len(), &wire[..]);

    // A broker does not know the level before CONNECT; CONNECT carries it.
    let context = DecodeContext::new(Protocol::V5).with_maximum_packet_size(64 * 1024);
    match decode(&mut wire, &context)? {
        Some(Packet::Connect(decoded)) => {
            println!("decoded {} from {:?}", decoded.protocol, decoded.client_id);
            assert_eq!(*decoded, connect);
        }
        other => return Err(format!("expected CONNECT, got {other:?}").into()),
    }

    // PUBREL with flags 0000 instead of 0010 is malformed [MQTT-3.6.1-1].
    let mut bad = BytesMut::from(&[0x60, 0x02, 0x00, 0x01][..]);
    if let Err(error) = decode(&mut bad, &context) {
        println!("refused: {error} -> DISCONNECT {}", error.reason_code());
    }
    Ok(())
}
