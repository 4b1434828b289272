//! The JDK 17 recording of `Workload.java` in `testdata/`. Event counts were read with the JDK's
//! own `jfr summary testdata/java-jdk.jfr`: 443 jdk.ExecutionSample, 886
//! jdk.ObjectAllocationSample, 41 jdk.JavaMonitorEnter.

use kiln_jfr::JfrDecoder;
use kiln_plugin_api::{Decoder, IngestMeta, Labels, Profile};

fn fixture() -> Vec<u8> {
    std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../testdata/java-jdk.jfr"
    ))
    .unwrap()
}

fn meta() -> IngestMeta {
    IngestMeta {
        app: "java".into(),
        labels: Labels::from_pairs([("service_name", "java")]),
        start_ns: 1,
        end_ns: 2,
        ..Default::default()
    }
}

fn by<'a>(ps: &'a [Profile], name: &str) -> &'a Profile {
    ps.iter()
        .find(|p| p.profile_type.name == name)
        .unwrap_or_else(|| {
            panic!(
                "no {name}: {:?}",
                ps.iter().map(|p| &p.profile_type.name).collect::<Vec<_>>()
            )
        })
}

fn has_frame(p: &Profile, f: &str) -> bool {
    p.samples.iter().any(|s| p.stack_names(s).any(|n| n == f))
}

#[test]
fn jdk_recording_decodes_to_cpu_alloc_and_lock() {
    let ps = JfrDecoder::default().decode(&fixture(), &meta()).unwrap();
    for p in &ps {
        p.validate().unwrap();
    }
    let cpu = by(&ps, "cpu");
    // Every ExecutionSample with a stack counts once (a few may lack a stack trace).
    assert!(
        cpu.total() > 400 && cpu.total() <= 443,
        "cpu total {}",
        cpu.total()
    );
    assert!(has_frame(cpu, "Workload.hashWork"), "hashWork missing");
    assert!(has_frame(cpu, "Workload.main"));
    let alloc = by(&ps, "alloc_sample_objects");
    assert!(
        alloc.total() > 800 && alloc.total() <= 886,
        "alloc total {}",
        alloc.total()
    );
    assert!(has_frame(alloc, "Workload.allocWork"));
    assert!(by(&ps, "alloc_sample_bytes").total() > 0);
    let locks = by(&ps, "lock_count");
    assert!(
        locks.total() >= 1 && locks.total() <= 41 + 1_000,
        "lock total {}",
        locks.total()
    );
    assert!(by(&ps, "lock_duration").total() > 0);
    // Each profile carries the frames its samples use, every one of them.
    for p in &ps {
        let mut used = vec![false; p.frames.len()];
        for s in &p.samples {
            for &f in &s.stack {
                used[f as usize] = true;
            }
        }
        assert!(
            used.iter().all(|&u| u),
            "{}: unused frames",
            p.profile_type.name
        );
    }
    assert!(cpu.frames.len() != alloc.frames.len());
}

#[test]
fn gzip_and_multipart_with_labels() {
    use prost::Message;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &fixture()).unwrap();
    let jfr_gz = gz.finish().unwrap();
    let snapshot = kiln_jfr::LabelsSnapshot {
        contexts: [(
            7,
            kiln_jfr::Context {
                labels: [(1, 2)].into(),
            },
        )]
        .into(),
        strings: [(1, "span".to_string()), (2, "checkout".to_string())].into(),
    };
    let mut body = Vec::new();
    body.extend_from_slice(
        b"--b\r\nContent-Disposition: form-data; name=\"jfr\"; filename=\"jfr\"\r\n\r\n",
    );
    body.extend_from_slice(&jfr_gz);
    body.extend_from_slice(b"\r\n--b\r\nContent-Disposition: form-data; name=\"labels\"; filename=\"labels\"\r\nContent-Type: application/x-protobuf\r\n\r\n");
    body.extend_from_slice(&snapshot.encode_to_vec());
    body.extend_from_slice(b"\r\n--b--\r\n");
    let mut m = meta();
    m.content_type = Some("multipart/form-data; boundary=b".into());
    let ps = JfrDecoder::default().decode(&body, &m).unwrap();
    assert_eq!(
        by(&ps, "cpu").total(),
        by(
            &JfrDecoder::default().decode(&jfr_gz, &meta()).unwrap(),
            "cpu"
        )
        .total()
    );
    let mut m2 = m.clone();
    m2.content_type = Some("multipart/form-data; boundary=b".into());
    let err = JfrDecoder::default()
        .decode(
            b"--b\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\n1\r\n--b--\r\n",
            &m2,
        )
        .unwrap_err();
    assert!(err.to_string().contains("'jfr' part"), "{err}");
}

#[test]
fn two_recordings_back_to_back_are_two_chunks() {
    let one = fixture();
    let mut two = one.clone();
    two.extend_from_slice(&one);
    let a = by(&JfrDecoder::default().decode(&one, &meta()).unwrap(), "cpu").total();
    let b = by(&JfrDecoder::default().decode(&two, &meta()).unwrap(), "cpu").total();
    assert_eq!(b, 2 * a);
}

#[test]
fn truncated_and_corrupted_recordings_are_errors_not_panics() {
    let data = fixture();
    let d = JfrDecoder::default();
    for cut in (0..data.len()).step_by(997) {
        assert!(
            d.decode(&data[..cut], &meta()).is_err(),
            "cut at {cut} must fail: the chunk size says more"
        );
    }
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..300 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let mut m = data.clone();
        let i = (state % m.len() as u64) as usize;
        m[i] ^= (state >> 40) as u8 | 1;
        if let Ok(ps) = d.decode(&m, &meta()) {
            for p in ps {
                p.validate().unwrap();
            }
        }
    }
    assert!(d.decode(b"FLR\0garbage", &meta()).is_err());
    assert!(d
        .decode(&[0u8; 100], &meta())
        .unwrap_err()
        .to_string()
        .contains("magic"));
}
