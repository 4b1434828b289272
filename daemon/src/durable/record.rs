//! What one acknowledged push looks like in the write-ahead log: the bodies as received (most
//! are already gzip'd by the agent) with everything needed to decode them again exactly as the
//! first time — decoder, request metadata with its resolved time window, routing.
//!
//! Each record names the tenant of its push, so a replay stores the profiles where the push
//! would have (records from before tenants have none: the default tenant).
//!
//! Logging bodies rather than decoded profiles keeps the log about as small as the traffic and
//! costs no encoding on the hot path; replay runs the decoders again.

use bytes::Bytes;
use kiln_plugin_api::{IngestMeta, Tenant};
use prost::Message;

/// One body of a push and how to decode it.
#[derive(Debug, Clone, PartialEq)]
pub struct Unit {
    /// Decoder name (`pprof`, `jfr`, `otlp`, a plugin's format…).
    pub decoder: String,
    pub meta: IngestMeta,
    pub body: Bytes,
    /// Route each decoded profile by its own labels (OTLP, whose bodies hold many services)
    /// instead of by `meta`.
    pub route_by_profile: bool,
}

#[derive(Clone, PartialEq, Message)]
struct LoggedPush {
    #[prost(message, repeated, tag = "1")]
    units: Vec<LoggedUnit>,
    /// Empty: the default tenant.
    #[prost(string, tag = "2")]
    tenant: String,
}

#[derive(Clone, PartialEq, Message)]
struct LoggedUnit {
    #[prost(string, tag = "1")]
    decoder: String,
    #[prost(string, tag = "2")]
    meta_json: String,
    #[prost(bytes = "bytes", tag = "3")]
    body: Bytes,
    /// `body` is LZ4-compressed (with its size prepended).
    #[prost(bool, tag = "4")]
    lz4: bool,
    #[prost(bool, tag = "5")]
    route_by_profile: bool,
}

/// With `compress`, bodies smaller than this, or already gzip'd, are still logged as they are.
const COMPRESS_FROM: usize = 4096;

fn is_gzip(b: &[u8]) -> bool {
    b.starts_with(&[0x1f, 0x8b])
}

/// Encodes a push for the log; `compress` (`wal.compress`) LZ4-compresses bodies that are not
/// compressed already.
pub fn encode(tenant: &Tenant, units: &[Unit], compress: bool) -> Vec<u8> {
    LoggedPush {
        tenant: if tenant.is_default() {
            String::new()
        } else {
            tenant.to_string()
        },
        units: units
            .iter()
            .map(|u| {
                let lz4 = compress && u.body.len() >= COMPRESS_FROM && !is_gzip(&u.body);
                LoggedUnit {
                    decoder: u.decoder.clone(),
                    meta_json: serde_json::to_string(&u.meta).expect("metadata serializes"),
                    body: if lz4 {
                        lz4_flex::compress_prepend_size(&u.body).into()
                    } else {
                        u.body.clone()
                    },
                    lz4,
                    route_by_profile: u.route_by_profile,
                }
            })
            .collect(),
    }
    .encode_to_vec()
}

/// Decodes a logged push: its tenant and bodies; `max_body` bounds a decompressed body.
pub fn decode(payload: &[u8], max_body: u64) -> Result<(Tenant, Vec<Unit>), String> {
    let push = LoggedPush::decode(payload).map_err(|e| format!("log record: {e}"))?;
    let tenant = if push.tenant.is_empty() {
        Tenant::default()
    } else {
        Tenant::new(push.tenant).map_err(|e| format!("log record: {e}"))?
    };
    let units = push
        .units
        .into_iter()
        .map(|u| {
            let body = if u.lz4 {
                let size = u
                    .body
                    .get(..4)
                    .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
                    .ok_or("log record: short compressed body")?;
                if u64::from(size) > max_body {
                    return Err(format!(
                        "log record: body of {size} bytes exceeds server.max_decompressed_bytes"
                    ));
                }
                lz4_flex::decompress_size_prepended(&u.body)
                    .map_err(|e| format!("log record: {e}"))?
                    .into()
            } else {
                u.body
            };
            Ok(Unit {
                decoder: u.decoder,
                meta: serde_json::from_str(&u.meta_json)
                    .map_err(|e| format!("log record metadata: {e}"))?,
                body,
                route_by_profile: u.route_by_profile,
            })
        })
        .collect::<Result<_, String>>()?;
    Ok((tenant, units))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_compressed_and_gzip_bodies() {
        let meta = IngestMeta {
            app: "a".into(),
            start_ns: 1_700_000_000_000_000_000,
            end_ns: 1_700_000_010_000_000_000,
            ..IngestMeta::default()
        };
        let units = vec![
            Unit {
                decoder: "folded".into(),
                meta: meta.clone(),
                body: Bytes::from("a;b;c 1\n".repeat(2000)),
                route_by_profile: false,
            },
            Unit {
                decoder: "pprof".into(),
                meta,
                body: Bytes::from_static(&[0x1f, 0x8b, 8, 0, 1, 2, 3]),
                route_by_profile: true,
            },
        ];
        let enc = encode(&Tenant::default(), &units, true);
        assert!(enc.len() < 8000, "text is compressed: {}", enc.len());
        assert_eq!(
            decode(&enc, 1 << 20).unwrap(),
            (Tenant::default(), units.clone())
        );
        // Records of either kind are read back whatever the setting is now.
        let plain = encode(&Tenant::default(), &units, false);
        assert!(plain.len() > 16_000, "logged as received: {}", plain.len());
        assert_eq!(
            decode(&plain, 1 << 20).unwrap(),
            (Tenant::default(), units.clone())
        );
        let b = Tenant::new("team-b").unwrap();
        assert_eq!(decode(&encode(&b, &units, true), 1 << 20).unwrap().0, b);
        // A record from before tenants (no field 2) is the default tenant's.
        let old = LoggedPush {
            units: vec![],
            tenant: String::new(),
        }
        .encode_to_vec();
        assert_eq!(decode(&old, 1 << 20).unwrap().0, Tenant::default());
        assert!(decode(&enc, 100).is_err(), "bounded by max_body");
        assert!(decode(&[0xff, 0xff], 1 << 20).is_err());
    }
}
