//! The pure admission path, without HTTP or TLS: parse → detect → plan → patch → serialise
//! (`admission::review`), per pod size. `cargo bench --bench review`.

mod support;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use serverfirst::admission;
use serverfirst::config::{Config, Mode};

fn review(c: &mut Criterion) {
    let config = Config::default();
    let mut group = c.benchmark_group("admission::review");
    for body in support::bodies() {
        let answer = admission::review(&body.bytes, Mode::Enforce, &config).expect("valid review");
        support::check_answer(&body.bytes, &answer.body, body.expect).expect("correct answer");
        group.throughput(Throughput::Bytes(body.bytes.len() as u64));
        group.bench_with_input(
            BenchmarkId::from_parameter(body.name),
            &body.bytes,
            |b, bytes| b.iter(|| admission::review(bytes, Mode::Enforce, &config)),
        );
    }
    group.finish();
}

criterion_group!(benches, review);
criterion_main!(benches);
