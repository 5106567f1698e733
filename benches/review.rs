//! The pure admission path, without HTTP or TLS: parse → detect → plan → patch → serialise
//! (`admission::review`), per pod size, with no mesh state and with a large one loaded (10,000
//! namespaces, 1,000 PeerAuthentications and 1,000 AuthorizationPolicies, ten of each in the
//! pod's namespace with selectors that do not match it, so the decision reads them all).
//! `cargo bench --bench review`.

mod support;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use serverfirst::admission;
use serverfirst::config::{Config, Mode};
use serverfirst::mesh_state::MeshState;

fn review(c: &mut Criterion) {
    let config = Config::default();
    let states = [
        ("no mesh state", MeshState::default()),
        ("large mesh state", support::large_mesh_state()),
    ];
    let mut group = c.benchmark_group("admission::review");
    for body in support::bodies() {
        for (state, mesh) in &states {
            let answer =
                admission::review(&body.bytes, Mode::Enforce, &config, mesh).expect("valid review");
            support::check_answer(&body.bytes, &answer.body, body.expect).expect("correct answer");
            group.throughput(Throughput::Bytes(body.bytes.len() as u64));
            group.bench_with_input(
                BenchmarkId::new(*state, body.name),
                &body.bytes,
                |b, bytes| b.iter(|| admission::review(bytes, Mode::Enforce, &config, mesh)),
            );
        }
    }
    group.finish();
}

criterion_group!(benches, review);
criterion_main!(benches);
