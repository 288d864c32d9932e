//! The NVMe driver on the host, against the NVMe model (`usrdrv_nvme::model`)
//! through usrdrv's emulated backend: data integrity over every PRP shape,
//! queue wrap-around, several queues on several threads, named statuses,
//! injected I/O errors, revocation mid-I/O and at every step of a workload,
//! shadow doorbells (across a controller reset too), and the leak check after each test (every queue deleted, every buffer
//! freed).

use std::time::{Duration, Instant};

use usrdrv::Device;
use usrdrv::dma::{DmaBuffer, DmaMask};
use usrdrv::emulated::{EmulatedDevice, LeakReport};
use usrdrv_nvme::model::{NvmeModel, NvmeModelConfig};
use usrdrv_nvme::{Controller, ControllerOptions, Namespace, NvmeError, Op};

fn open(emulated: &EmulatedDevice) -> Result<Controller, NvmeError> {
    Controller::from_device(Device::emulated(emulated, DmaMask::BITS_64)?)
}

fn pattern(len: usize, seed: u64) -> Vec<u8> {
    (0..len as u64)
        .map(|i| (i.wrapping_mul(0x9e37_79b9).wrapping_add(seed) >> 7) as u8)
        .collect()
}

fn finish(emulated: EmulatedDevice) {
    if let Err(report) = emulated.finish() {
        let report: LeakReport = report;
        panic!("{report}");
    }
}

#[test]
fn identify_reports_what_the_model_is() {
    let model = NvmeModel::new();
    let emulated = EmulatedDevice::new(model);
    let mut nvme = open(&emulated).unwrap();
    let defaults = NvmeModelConfig::default();
    assert_eq!(nvme.info().serial, defaults.serial);
    assert_eq!(nvme.info().model, defaults.model);
    assert_eq!(nvme.info().firmware, defaults.firmware);
    assert_eq!(nvme.max_transfer(), 512 * 1024);
    assert_eq!(nvme.io_queue_count(), 64);
    let namespaces = nvme.namespaces().unwrap();
    assert_eq!(namespaces.len(), 1);
    assert_eq!(namespaces[0].blocks, defaults.blocks);
    assert_eq!(namespaces[0].block_size, 512);
    drop(nvme);
    finish(emulated);
}

#[test]
fn every_prp_shape_round_trips_and_lands_where_it_should() {
    // MDTS 10 (4 MiB): transfers long enough for a chained PRP list.
    let model = NvmeModel::with_config(NvmeModelConfig {
        mdts: 10,
        blocks: 64 * 1024,
        ..NvmeModelConfig::default()
    });
    let emulated = EmulatedDevice::new(model.clone());
    let mut nvme = open(&emulated).unwrap();
    let ns = nvme.namespaces().unwrap()[0];
    let mut queue = nvme.io_queue(16).unwrap();
    let buffer = nvme.device().alloc_dma(4 << 20).unwrap();
    let back = nvme.device().alloc_dma(4 << 20).unwrap();
    // (buffer offset, bytes): one block, one page, two pages from an
    // unaligned start, a PRP list, a list across two list pages (chained).
    for (i, (offset, len)) in [
        (0usize, 512usize),
        (0, 4096),
        (512, 4096),
        (1024, 64 * 1024),
        (0, 4 << 20),
        (2048, (4 << 20) - 4096),
    ]
    .into_iter()
    .enumerate()
    {
        let data = pattern(len, i as u64);
        buffer.write_bytes(offset, &data).unwrap();
        let lba = 8 * i as u64;
        let blocks = ns.blocks_in(len);
        queue.write_at(&ns, lba, blocks, &buffer, offset).unwrap();
        assert_eq!(
            model.disk(lba as usize * 512, len),
            data,
            "case {i}: on the disk"
        );
        back.fill(0, back.len(), 0).unwrap();
        queue.read_at(&ns, lba, blocks, &back, offset).unwrap();
        let mut got = vec![0u8; len];
        back.read_bytes(offset, &mut got).unwrap();
        assert_eq!(got, data, "case {i}: read back");
    }
    assert_eq!(emulated.faults(), vec![], "no DMA outside the mappings");
    drop((queue, buffer, back, nvme));
    finish(emulated);
}

#[test]
fn queued_commands_wrap_the_queue_many_times_with_data_checked() {
    let model = NvmeModel::new();
    let emulated = EmulatedDevice::new(model.clone());
    let mut nvme = open(&emulated).unwrap();
    let ns = nvme.namespaces().unwrap()[0];
    let mut queue = nvme.io_queue(8).unwrap();
    let mut free: Vec<DmaBuffer> = (0..7)
        .map(|_| nvme.device().alloc_dma(4096).unwrap())
        .collect();
    for n in 0..200u64 {
        let buffer = match free.pop() {
            Some(buffer) => buffer,
            None => {
                let done = queue.wait().unwrap();
                done.result.unwrap();
                done.buffer
            }
        };
        buffer.write_bytes(0, &pattern(4096, n)).unwrap();
        queue
            .submit(Op::Write, &ns, n * 8, 8, buffer, n)
            .map_err(|r| r.error)
            .unwrap();
    }
    while queue.in_flight() > 0 {
        queue.wait().unwrap().result.unwrap();
    }
    for n in [0u64, 77, 199] {
        assert_eq!(
            model.disk(n as usize * 4096, 4096),
            pattern(4096, n),
            "write {n}"
        );
    }
    drop((queue, free, nvme));
    finish(emulated);
}

#[test]
fn three_threads_on_three_queues_one_polled_two_on_interrupts() {
    let model = NvmeModel::new();
    let emulated = EmulatedDevice::new(model.clone());
    let mut nvme = open(&emulated).unwrap();
    let ns = nvme.namespaces().unwrap()[0];
    let queues = vec![
        nvme.io_queue(8).unwrap(),
        nvme.io_queue_with_interrupts(8).unwrap(),
        nvme.io_queue_with_interrupts(8).unwrap(),
    ];
    assert!(queues[1].uses_interrupts() && !queues[0].uses_interrupts());
    let device = nvme.device();
    std::thread::scope(|s| {
        for (t, mut queue) in queues.into_iter().enumerate() {
            let buffers: Vec<DmaBuffer> = (0..4).map(|_| device.alloc_dma(4096).unwrap()).collect();
            s.spawn(move || {
                let mut free = buffers;
                let base = 100 * t as u64;
                for n in 0..100u64 {
                    let buffer = match free.pop() {
                        Some(buffer) => buffer,
                        None => {
                            let done = queue.wait().unwrap();
                            done.result.unwrap();
                            done.buffer
                        }
                    };
                    buffer.write_bytes(0, &pattern(4096, base + n)).unwrap();
                    queue
                        .submit(Op::Write, &ns, (base + n) * 8, 8, buffer, n)
                        .map_err(|r| r.error)
                        .unwrap();
                }
                while queue.in_flight() > 0 {
                    queue.wait().unwrap().result.unwrap();
                }
            });
        }
    });
    for t in 0..3u64 {
        let n = 100 * t + 99;
        assert_eq!(model.disk(n as usize * 4096, 4096), pattern(4096, n));
    }
    drop(nvme);
    finish(emulated);
}

#[test]
fn statuses_are_named_and_an_injected_error_fails_one_command_only() {
    let model = NvmeModel::new();
    let emulated = EmulatedDevice::new(model.clone());
    let mut nvme = open(&emulated).unwrap();
    let ns = nvme.namespaces().unwrap()[0];
    let mut queue = nvme.io_queue(8).unwrap();
    let buffer = nvme.device().alloc_dma(4096).unwrap();
    let name = |e: NvmeError| match e {
        NvmeError::Command { status, .. } => status.name(),
        other => panic!("not a command status: {other:?}"),
    };
    let beyond = ns.blocks;
    assert_eq!(
        name(queue.read(&ns, beyond, 1, &buffer).unwrap_err()),
        "LBA Out of Range"
    );
    let missing = Namespace { id: 2, ..ns };
    assert_eq!(
        name(queue.read(&missing, 0, 1, &buffer).unwrap_err()),
        "Invalid Namespace or Format"
    );
    // An unrecovered read error (media error) on one command...
    model.fail_next_io(0x281);
    assert_eq!(
        name(queue.read(&ns, 0, 8, &buffer).unwrap_err()),
        "Unrecovered Read Error"
    );
    // ... and the queue keeps working.
    queue.write(&ns, 0, 8, &buffer).unwrap();
    queue.read(&ns, 0, 8, &buffer).unwrap();
    // Write Zeroes and deallocate reach the disk.
    buffer.fill(0, 4096, 0xab).unwrap();
    queue.write(&ns, 100, 8, &buffer).unwrap();
    queue.write(&ns, 200, 8, &buffer).unwrap();
    queue.write_zeroes(&ns, 100, 8).unwrap();
    queue.deallocate(&ns, &[(200, 8)]).unwrap();
    assert!(model.disk(100 * 512, 8192).iter().all(|b| *b == 0));
    queue.flush(&ns).unwrap();
    drop((queue, buffer, nvme));
    finish(emulated);
}

#[test]
fn revocation_mid_io_gives_revoked_promptly_and_leaks_nothing() {
    let model = NvmeModel::new();
    let emulated = std::sync::Arc::new(EmulatedDevice::new(model.clone()));
    let mut nvme = open(&emulated).unwrap();
    let ns = nvme.namespaces().unwrap()[0];
    let mut queue = nvme.io_queue_with_interrupts(8).unwrap();
    // Commands the controller will not complete: the waiter sleeps on the
    // interrupt until the device goes away.
    model.hold_next_io(3);
    for n in 0..3 {
        let buffer = nvme.device().alloc_dma(4096).unwrap();
        queue
            .submit(Op::Read, &ns, n * 8, 8, buffer, n)
            .map_err(|r| r.error)
            .unwrap();
    }
    let revoker = {
        let emulated = std::sync::Arc::clone(&emulated);
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            emulated.revoke();
        })
    };
    let started = Instant::now();
    let err = queue.wait().unwrap_err();
    assert!(err.is_revoked(), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    revoker.join().unwrap();
    assert_eq!(queue.in_flight(), 3, "the buffers stay with the queue");
    let buffer = nvme.device().alloc_dma(4096);
    assert!(buffer.is_err(), "no new DMA on a revoked device");
    drop((queue, nvme));
    finish(std::sync::Arc::into_inner(emulated).unwrap());
}

/// Bring-up, a queue, a write and a read back, queued I/O; returns the
/// operations it took before its teardown (the drops) began.
fn workload(emulated: &EmulatedDevice) -> Result<u64, NvmeError> {
    let mut nvme = open(emulated)?;
    let ns = nvme.namespaces()?[0];
    let mut queue = nvme.io_queue(4)?;
    let buffer = nvme.device().alloc_dma(8192)?;
    buffer.write_bytes(0, &pattern(8192, 3))?;
    queue.write(&ns, 0, 16, &buffer)?;
    queue.read(&ns, 0, 16, &buffer)?;
    let extra = nvme.device().alloc_dma(4096)?;
    queue
        .submit(Op::Read, &ns, 0, 8, extra, 1)
        .map_err(|r| r.error)?;
    queue.wait()?.result?;
    Ok(emulated.operations())
}

#[test]
fn a_revocation_at_every_step_gives_revoked_and_leaks_nothing() {
    let clean = EmulatedDevice::new(NvmeModel::new());
    let work = workload(&clean).unwrap();
    let steps = clean.operations();
    finish(clean);
    assert!(work > 30 && steps > work, "{work} of {steps}");
    for step in 1..=steps {
        let emulated = EmulatedDevice::new(NvmeModel::new());
        emulated.revoke_after(step);
        match workload(&emulated) {
            Err(err) => assert!(err.is_revoked(), "step {step} of {steps}: {err:?}"),
            // Revoked during the teardown (deleting the queue, disabling the
            // controller): nothing left to fail, everything still released.
            Ok(_) => assert!(step > work, "step {step} of {work} was not noticed"),
        }
        workload(&emulated).unwrap_or_else(|e| panic!("step {step}: reopen: {e}"));
        if let Err(report) = emulated.finish() {
            panic!("step {step}: {report}");
        }
    }
}

fn timeout_text(result: &Result<(), NvmeError>) -> String {
    match result {
        Err(NvmeError::Timeout { what, .. }) => what.clone(),
        other => panic!("expected a timeout, got {other:?}"),
    }
}

#[test]
fn a_command_that_never_completes_is_aborted_and_the_queue_goes_on() {
    let model = NvmeModel::new();
    let emulated = EmulatedDevice::new(model.clone());
    let mut nvme = open(&emulated).unwrap();
    nvme.set_command_timeout(Duration::from_millis(100));
    let ns = nvme.namespaces().unwrap()[0];
    let mut queue = nvme.io_queue(8).unwrap();
    model.hold_next_io(1);
    for n in 0..3u64 {
        let buffer = nvme.device().alloc_dma(4096).unwrap();
        queue
            .submit(Op::Read, &ns, n * 8, 8, buffer, n)
            .map_err(|r| r.error)
            .unwrap();
    }
    let started = Instant::now();
    let mut results: Vec<(u64, Result<(), NvmeError>)> = (0..3)
        .map(|_| {
            let done = queue.wait().unwrap();
            (done.tag, done.result)
        })
        .collect();
    results.sort_by_key(|(tag, _)| *tag);
    assert!(results[1].1.is_ok() && results[2].1.is_ok(), "{results:?}");
    let what = timeout_text(&results[0].1);
    assert!(what.contains("aborted"), "{what}");
    assert!(started.elapsed() >= Duration::from_millis(100));
    assert_eq!((model.aborted(), model.resets(), nvme.resets()), (1, 0, 0));
    assert_eq!(nvme.aborts(), 1);
    // Synchronously too.
    let buffer = nvme.device().alloc_dma(4096).unwrap();
    model.hold_next_io(1);
    let what = timeout_text(&queue.read(&ns, 0, 8, &buffer));
    assert!(what.contains("aborted"), "{what}");
    queue.write(&ns, 0, 8, &buffer).unwrap();
    assert_eq!(nvme.resets(), 0);
    drop((queue, buffer, nvme));
    finish(emulated);
}

#[test]
fn a_command_that_cannot_be_aborted_resets_the_controller_and_every_queue_recovers() {
    let model = NvmeModel::with_config(NvmeModelConfig {
        abort: false, // as QEMU's: Abort never aborts
        ..NvmeModelConfig::default()
    });
    let emulated = EmulatedDevice::new(model.clone());
    let mut nvme = open(&emulated).unwrap();
    nvme.set_command_timeout(Duration::from_millis(100));
    let ns = nvme.namespaces().unwrap()[0];
    let mut first = nvme.io_queue(8).unwrap();
    let mut second = nvme.io_queue_with_interrupts(8).unwrap();
    let buffer = |nvme: &Controller| nvme.device().alloc_dma(4096).unwrap();
    // Two stuck commands on the first queue, one on the second.
    model.hold_next_io(3);
    first
        .submit(Op::Read, &ns, 0, 8, buffer(&nvme), 1)
        .map_err(|r| r.error)
        .unwrap();
    first
        .submit(Op::Read, &ns, 8, 8, buffer(&nvme), 2)
        .map_err(|r| r.error)
        .unwrap();
    second
        .submit(Op::Write, &ns, 16, 8, buffer(&nvme), 3)
        .map_err(|r| r.error)
        .unwrap();
    let one = first.wait().unwrap();
    let two = first.wait().unwrap();
    let mut outcomes = [(one.tag, one.result), (two.tag, two.result)];
    outcomes.sort_by_key(|(tag, _)| *tag);
    let what = timeout_text(&outcomes[0].1);
    assert!(what.contains("reset"), "{what}");
    assert!(
        matches!(outcomes[1].1, Err(NvmeError::Reset { command: "Read" })),
        "{outcomes:?}"
    );
    assert_eq!((nvme.resets(), model.resets()), (1, 1));
    // The other queue learns of the reset on its next use: its command comes
    // back failed with its buffer, and then it works again.
    let third = second.wait().unwrap();
    assert_eq!(third.tag, 3);
    assert!(
        matches!(third.result, Err(NvmeError::Reset { command: "Write" })),
        "{:?}",
        third.result
    );
    let data = buffer(&nvme);
    data.write_bytes(0, &pattern(4096, 9)).unwrap();
    second.write(&ns, 40, 8, &data).unwrap();
    first.read(&ns, 40, 8, &third.buffer).unwrap();
    let mut got = vec![0u8; 4096];
    third.buffer.read_bytes(0, &mut got).unwrap();
    assert_eq!(got, pattern(4096, 9), "both queues work after the reset");
    // A synchronous command that cannot be aborted resets it too.
    model.hold_next_io(1);
    let what = timeout_text(&first.read(&ns, 0, 8, &data));
    assert!(what.contains("reset"), "{what}");
    first.read(&ns, 40, 8, &data).unwrap();
    second.read(&ns, 40, 8, &data).unwrap();
    assert_eq!(nvme.resets(), 2);
    assert_eq!(emulated.faults(), vec![], "nothing reached freed memory");
    drop((first, second, data, third, one.buffer, two.buffer, nvme));
    finish(emulated);
}

#[test]
fn deferred_submissions_run_on_one_doorbell_and_are_never_left_unrung() {
    let model = NvmeModel::new();
    let emulated = EmulatedDevice::new(model.clone());
    let mut nvme = open(&emulated).unwrap();
    let ns = nvme.namespaces().unwrap()[0];
    let mut queue = nvme.io_queue(8).unwrap();
    for n in 0..5u64 {
        let buffer = nvme.device().alloc_dma(4096).unwrap();
        buffer.write_bytes(0, &pattern(4096, 50 + n)).unwrap();
        queue
            .submit_deferred(Op::Write, &ns, n * 8, 8, buffer, n)
            .map_err(|r| r.error)
            .unwrap();
    }
    assert!(
        model.disk(0, 4096).iter().all(|b| *b == 0),
        "nothing runs before the doorbell"
    );
    queue.ring().unwrap();
    assert_eq!(
        model.disk(4 * 4096, 4096),
        pattern(4096, 54),
        "all ran at the doorbell"
    );
    // One more deferred, never rung by hand: the wait rings it.
    let buffer = nvme.device().alloc_dma(4096).unwrap();
    queue
        .submit_deferred(Op::Read, &ns, 0, 8, buffer, 99)
        .map_err(|r| r.error)
        .unwrap();
    let mut seen = Vec::new();
    while queue.in_flight() > 0 {
        let done = queue.wait().unwrap();
        done.result.unwrap();
        seen.push(done.tag);
        if done.tag == 99 {
            let mut got = vec![0u8; 4096];
            done.buffer.read_bytes(0, &mut got).unwrap();
            assert_eq!(got, pattern(4096, 50));
        }
    }
    seen.sort_unstable();
    assert_eq!(seen, [0, 1, 2, 3, 4, 99]);
    drop((queue, nvme));
    finish(emulated);
}

#[test]
fn the_callers_own_mapped_memory_carries_queued_commands_and_comes_back() {
    use usrdrv::dma::{Direction, DmaMapping};
    let model = NvmeModel::new();
    let emulated = EmulatedDevice::new(model.clone());
    let mut nvme = open(&emulated).unwrap();
    let ns = nvme.namespaces().unwrap()[0];
    let mut queue = nvme.io_queue_for::<DmaMapping<Vec<u8>>>(8).unwrap();
    // Heap memory at whatever address the allocator gives, 12 KiB + 512: the
    // PRPs start mid-page and take a list.
    let len = 3 * 4096 + 512;
    let blocks = ns.blocks_in(len);
    let written = pattern(len, 41);
    let out = nvme
        .device()
        .map_dma(written.clone(), Direction::ToDevice)
        .unwrap();
    queue.submit(Op::Write, &ns, 64, blocks, out, 1).unwrap();
    let done = queue.wait().unwrap();
    done.result.unwrap();
    assert_eq!(done.tag, 1);
    // The queue gave the mapping back; unmapping gives back the Vec.
    assert_eq!(done.buffer.unmap().unwrap(), written);
    assert_eq!(model.disk(64 * 512, len), written);

    // A read needs a buffer the device may write: refused with the buffer
    // back, before anything reaches the controller.
    let read_only = nvme
        .device()
        .map_dma(vec![0u8; len], Direction::ToDevice)
        .unwrap();
    let refused = queue
        .submit(Op::Read, &ns, 64, blocks, read_only, 2)
        .unwrap_err();
    assert!(
        matches!(&refused.error, NvmeError::Transfer { what } if what.contains("FromDevice")),
        "{}",
        refused.error
    );
    drop(refused.buffer.unmap().unwrap());

    let into = nvme
        .device()
        .map_dma(vec![0u8; len], Direction::FromDevice)
        .unwrap();
    queue.submit(Op::Read, &ns, 64, blocks, into, 3).unwrap();
    let done = queue.wait().unwrap();
    done.result.unwrap();
    assert_eq!(done.buffer.unmap().unwrap(), written);

    // A queue dropped with a mapping in flight ends the command first, then
    // the mapping is unmapped and freed with it: no leak.
    let held = nvme
        .device()
        .map_dma(vec![0u8; 4096], Direction::FromDevice)
        .unwrap();
    model.hold_next_io(1);
    queue
        .submit(Op::Read, &ns, 0, ns.blocks_in(4096), held, 4)
        .unwrap();
    drop(queue);
    drop(nvme);
    finish(emulated);
}

/// Writes `count` 4 KiB patterns through a queue of depth 8 (wrapping it
/// many times), reads them back through the same queue, and returns the
/// doorbell registers the queue wrote.
fn wrap_with_data(
    nvme: &Controller,
    ns: &Namespace,
    model: &NvmeModel,
    queue: &mut usrdrv_nvme::IoQueue,
    count: u64,
    seed: u64,
) -> u64 {
    let before = queue.doorbell_writes();
    let mut free: Vec<DmaBuffer> = (0..7)
        .map(|_| nvme.device().alloc_dma(4096).expect("a DMA buffer"))
        .collect();
    for (op, round) in [(Op::Write, 0), (Op::Read, 1)] {
        for n in 0..count {
            let buffer = match free.pop() {
                Some(buffer) => buffer,
                None => {
                    let done = queue.wait().expect("a completion");
                    done.result.as_ref().expect("the command succeeds");
                    check_read(&done, round, seed);
                    done.buffer
                }
            };
            if matches!(op, Op::Write) {
                buffer
                    .write_bytes(0, &pattern(4096, seed + n))
                    .expect("the buffer takes the pattern");
            }
            queue
                .submit(op, ns, n * 8, 8, buffer, round << 32 | n)
                .map_err(|r| r.error)
                .expect("the queue takes the command");
        }
        while queue.in_flight() > 0 {
            let done = queue.wait().expect("a completion");
            done.result.as_ref().expect("the command succeeds");
            check_read(&done, round, seed);
            free.push(done.buffer);
        }
    }
    for n in [0, count / 2, count - 1] {
        assert_eq!(
            model.disk(n as usize * 4096, 4096),
            pattern(4096, seed + n),
            "write {n}"
        );
    }
    queue.doorbell_writes() - before
}

/// A completed read (tag round 1) holds what write `n` wrote.
fn check_read(done: &usrdrv_nvme::Completed<DmaBuffer>, round: u64, seed: u64) {
    if round == 1 && done.tag >> 32 == 1 {
        let n = done.tag & 0xffff_ffff;
        let mut got = vec![0u8; 4096];
        done.buffer
            .read_bytes(0, &mut got)
            .expect("the buffer reads back");
        assert_eq!(got, pattern(4096, seed + n), "read {n}");
    }
}

/// A model with `config` and a controller on it, set up with shadow
/// doorbells if asked for (and if the model offers them).
fn open_with(
    config: NvmeModelConfig,
    shadow_doorbells: bool,
) -> (NvmeModel, EmulatedDevice, Controller) {
    let model = NvmeModel::with_config(config);
    let emulated = EmulatedDevice::new(model.clone());
    let device = Device::emulated(&emulated, DmaMask::BITS_64).expect("the emulated device opens");
    let nvme = Controller::from_device_with_options(device, ControllerOptions { shadow_doorbells })
        .expect("the controller comes up");
    (model, emulated, nvme)
}

#[test]
fn shadow_doorbells_carry_every_command_and_spare_head_doorbells() {
    let run = |shadow_doorbells: bool| {
        let (model, emulated, mut nvme) = open_with(NvmeModelConfig::default(), shadow_doorbells);
        assert_eq!(nvme.shadow_doorbells(), shadow_doorbells);
        let ns = nvme.namespaces().unwrap()[0];
        let mut queue = nvme.io_queue(8).unwrap();
        assert_eq!(queue.has_shadow_doorbells(), shadow_doorbells);
        let writes = wrap_with_data(&nvme, &ns, &model, &mut queue, 100, 7);
        drop((queue, nvme));
        finish(emulated);
        writes
    };
    let (registers, shadow) = (run(false), run(true));
    // The model asks for every tail it has caught up with, as QEMU 7.2
    // does, but never for a head: with shadow doorbells the head register
    // is rung once per wrap of the 16-entry completion queue, without them
    // once per 9 completions (the queue's slack).
    assert!(
        shadow < registers,
        "{shadow} doorbell writes with shadow doorbells, {registers} without"
    );
    assert!(shadow > 0, "the tail doorbells are still rung");
}

#[test]
fn shadow_doorbells_are_handed_over_again_after_a_reset() {
    let config = NvmeModelConfig {
        abort: false,
        ..NvmeModelConfig::default()
    };
    let (model, emulated, mut nvme) = open_with(config, true);
    nvme.set_command_timeout(Duration::from_millis(100));
    let ns = nvme.namespaces().unwrap()[0];
    let mut queue = nvme.io_queue(8).unwrap();
    assert!(model.has_doorbell_buffers());
    wrap_with_data(&nvme, &ns, &model, &mut queue, 20, 1);
    // A command the controller never completes (and will not abort) ends in
    // a reset, which makes the controller forget the shadow buffers.
    model.hold_next_io(1);
    let data = nvme.device().alloc_dma(4096).unwrap();
    let what = timeout_text(&queue.read(&ns, 0, 8, &data));
    assert!(what.contains("reset"), "{what}");
    assert_eq!(model.resets(), 1);
    assert!(
        model.has_doorbell_buffers(),
        "the driver handed them over again"
    );
    // Were it not so, the queue's tails would sit in the shadow buffer
    // unrung (its event index is zero) and these commands would time out.
    let writes = wrap_with_data(&nvme, &ns, &model, &mut queue, 40, 2);
    assert!(writes > 0);
    drop((queue, data, nvme));
    finish(emulated);
}

#[test]
fn a_controller_without_doorbell_buffer_config_keeps_to_its_registers() {
    let config = NvmeModelConfig {
        doorbell_buffer: false,
        ..NvmeModelConfig::default()
    };
    let (model, emulated, mut nvme) = open_with(config, true);
    assert!(!nvme.info().has_shadow_doorbells());
    assert!(!nvme.shadow_doorbells());
    let ns = nvme.namespaces().unwrap()[0];
    let mut queue = nvme.io_queue(8).unwrap();
    assert!(!queue.has_shadow_doorbells());
    wrap_with_data(&nvme, &ns, &model, &mut queue, 20, 3);
    drop((queue, nvme));
    finish(emulated);
}

#[test]
fn the_head_doorbell_waits_for_the_completion_queues_slack() {
    let model = NvmeModel::new();
    let emulated = EmulatedDevice::new(model.clone());
    let mut nvme = open(&emulated).unwrap();
    let ns = nvme.namespaces().unwrap()[0];
    // 8 submission entries and 16 completion entries: 8 consumed
    // completions may go untold, so the head register is written about
    // once per 9 completions; one command at a time, each needs its tail.
    let mut queue = nvme.io_queue(8).unwrap();
    let buffer = nvme.device().alloc_dma(4096).unwrap();
    for n in 0..90u64 {
        buffer.write_bytes(0, &pattern(4096, n)).unwrap();
        queue.write(&ns, n * 8, 8, &buffer).unwrap();
    }
    assert_eq!(
        queue.doorbell_writes(),
        90 + 90 / 9,
        "90 tails and 10 heads"
    );
    // The queue ran through its completion queue several times and every
    // write landed.
    for n in [0u64, 45, 89] {
        assert_eq!(model.disk(n as usize * 4096, 4096), pattern(4096, n));
    }
    drop((queue, buffer, nvme));
    finish(emulated);
}
