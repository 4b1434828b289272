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
///
/// The record comes in parts whose concatenation is the `LoggedPush` message: each body is a
/// part of its own, shared with the request rather than copied (the log writes the parts as
/// they are). A body is encoded after its unit's other fields, which protobuf allows.
pub fn encode(tenant: &Tenant, units: &[Unit], compress: bool) -> Vec<Bytes> {
    use prost::encoding::{bool as pbool, encode_key, encode_varint, string, WireType};
    let mut parts = Vec::with_capacity(2 * units.len() + 1);
    for u in units {
        let lz4 = compress && u.body.len() >= COMPRESS_FROM && !is_gzip(&u.body);
        let body = if lz4 {
            Bytes::from(lz4_flex::compress_prepend_size(&u.body))
        } else {
            u.body.clone()
        };
        let meta_json = serde_json::to_string(&u.meta).expect("metadata serializes");
        let mut fields = Vec::with_capacity(64 + meta_json.len());
        string::encode(1, &u.decoder, &mut fields);
        string::encode(2, &meta_json, &mut fields);
        pbool::encode(4, &lz4, &mut fields);
        pbool::encode(5, &u.route_by_profile, &mut fields);
        encode_key(3, WireType::LengthDelimited, &mut fields);
        encode_varint(body.len() as u64, &mut fields);
        let unit_len = fields.len() + body.len();
        let mut head = Vec::with_capacity(fields.len() + 11);
        encode_key(1, WireType::LengthDelimited, &mut head);
        encode_varint(unit_len as u64, &mut head);
        head.extend_from_slice(&fields);
        parts.push(head.into());
        parts.push(body);
    }
    if !tenant.is_default() {
        let mut t = Vec::new();
        string::encode(2, &tenant.to_string(), &mut t);
        parts.push(t.into());
    }
    parts
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

    fn encode(tenant: &Tenant, units: &[Unit], compress: bool) -> Vec<u8> {
        super::encode(tenant, units, compress).concat()
    }

    #[test]
    fn parts_share_the_bodies_and_decode_as_one_message() {
        let body = Bytes::from(vec![7u8; 10_000]);
        let unit = Unit {
            decoder: "jfr".into(),
            meta: IngestMeta {
                app: "svc".into(),
                ..IngestMeta::default()
            },
            body: body.clone(),
            route_by_profile: false,
        };
        let t = Tenant::new("team-a").unwrap();
        let parts = super::encode(&t, &[unit.clone(), unit.clone()], false);
        assert_eq!(parts.len(), 5);
        assert_eq!(parts[1].as_ptr(), body.as_ptr(), "the body is not copied");
        let whole = parts.concat();
        let as_prost = LoggedPush::decode(&whole[..]).unwrap();
        assert_eq!(as_prost.tenant, "team-a");
        assert_eq!(as_prost.units.len(), 2);
        assert_eq!(as_prost.units[1].body, body);
        assert_eq!(
            decode(&whole, 1 << 20).unwrap(),
            (t, vec![unit.clone(), unit])
        );
    }

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
