//! Feeds arbitrary bytes to the decoder at every protocol level and with a small and the protocol
//! maximum packet size. Properties checked:
//! * no panic, whatever the input;
//! * the decoder never reserves more than the maximum packet size;
//! * every packet it accepts encodes again, to bytes that decode to the same packet.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use mqtt_packets::{DecodeContext, Protocol, decode};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, input)) = data.split_first() else {
        return;
    };
    let protocol = match selector % 3 {
        0 => Protocol::V3_1,
        1 => Protocol::V3_1_1,
        _ => Protocol::V5,
    };
    let maximum = if selector & 0x80 != 0 { 256 } else { mqtt_packets::PROTOCOL_MAXIMUM_PACKET_SIZE };
    let context = DecodeContext::new(protocol).with_maximum_packet_size(maximum);
    let mut buf = BytesMut::from(input);
    let initial_capacity = buf.capacity();
    // Decode as many packets as the input holds.
    for _ in 0..64 {
        match decode(&mut buf, &context) {
            Ok(Some(packet)) => {
                let mut wire = BytesMut::new();
                packet.encode(protocol, &mut wire).expect("a decoded packet encodes");
                assert_eq!(wire.len(), packet.encoded_len(protocol));
                let again = decode(&mut wire, &context)
                    .expect("re-encoded packet decodes")
                    .expect("re-encoded packet is complete");
                assert_eq!(again, packet);
            }
            Ok(None) | Err(_) => break,
        }
    }
    assert!(buf.capacity() <= initial_capacity.max(maximum as usize));
});
