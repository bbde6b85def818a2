//! Feeds arbitrary bytes to the request decoder, as /dev/fuse would deliver
//! them and as an io_uring entry would (op area + payload).
//! Run: `cargo +nightly fuzz run decode` in crates/engine.
#![no_main]

use fastfuse::request::{decode, decode_header, Body, Layout};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let layouts = [
        Layout::default(),
        Layout {
            minor: 45,
            setxattr_ext: true,
        },
    ];
    if let Ok((header, body)) = decode_header(data) {
        for layout in layouts {
            let _ = decode(&header, Body::Contiguous(body), layout);
            let split = body.len().min(128);
            let _ = decode(
                &header,
                Body::Split {
                    op: &body[..split],
                    payload: &body[split..],
                },
                layout,
            );
        }
    }
});
