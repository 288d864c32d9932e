//! Copies into and out of DMA memory through `DmaRegion` (relaxed atomic
//! 8-byte words) against `copy_from_slice` (memcpy) on plain page memory, and
//! a 64-byte typed entry written with `write_obj` against the same memcpy.

use std::hint::black_box;

use usrdrv::Device;
use zerocopy::{FromBytes, Immutable, IntoBytes};

use super::raw::PageMemory;
use super::{Clock, PAGE, Plan, Result, Row, median, order};

/// A 64-byte submission-queue entry, as an NVMe driver writes one.
#[derive(FromBytes, IntoBytes, Immutable, Clone, Copy)]
#[repr(C)]
struct Entry {
    dwords: [u32; 16],
}

/// Times `api` and `raw` (each run `n` times per round), alternating.
fn compare(
    clock: &Clock,
    plan: Plan,
    mut api: impl FnMut() -> Result<()>,
    mut raw: impl FnMut(),
) -> Result<(f64, f64)> {
    let n = plan.map_pairs;
    let mut samples: [Vec<f64>; 2] = Default::default();
    for round in 0..plan.map_rounds {
        for which in order(round) {
            let t = clock.now();
            if which == 0 {
                for _ in 0..n {
                    api()?;
                }
            } else {
                for _ in 0..n {
                    raw();
                }
            }
            samples[which].push(clock.ns_since(t) / n as f64);
        }
    }
    Ok((median(&samples[0]), median(&samples[1])))
}

pub fn copies(device: &Device, clock: &Clock, plan: Plan) -> Result<[Row; 3]> {
    let buffer = device.alloc_dma(PAGE)?;
    let mut plain = PageMemory::new(PAGE)?;
    let data: Vec<u8> = (0..PAGE).map(|i| i as u8).collect();
    let mut out = vec![0u8; PAGE];
    let mut out_raw = vec![0u8; PAGE];

    let (api_in, raw_in) = compare(
        clock,
        plan,
        || Ok(buffer.write_bytes(0, black_box(&data))?),
        || plain.as_mut_slice().copy_from_slice(black_box(&data)),
    )?;
    let (api_out, raw_out) = compare(
        clock,
        plan,
        || {
            buffer.read_bytes(0, black_box(&mut out))?;
            Ok(())
        },
        || black_box(&mut out_raw[..]).copy_from_slice(plain.as_slice()),
    )?;
    let entry = Entry {
        dwords: std::array::from_fn(|i| i as u32),
    };
    let (api_obj, raw_obj) = compare(
        clock,
        plan,
        || Ok(buffer.write_obj(64 * 5, black_box(&entry))?),
        || plain.as_mut_slice()[64 * 5..64 * 6].copy_from_slice(black_box(&entry).as_bytes()),
    )?;
    let rounds = serde_json::json!({"rounds": plan.map_rounds, "copies_per_round": plan.map_pairs});
    Ok([
        Row::compared(
            "copy_in_4k",
            "copy 4 KiB into DMA memory",
            "ns",
            api_in,
            raw_in,
        )
        .ratio_at_most(1.5)
        .note(
            "DmaRegion::write_bytes (single-copy atomic 8-byte stores) vs memcpy into plain pages",
        )
        .extra(rounds.clone()),
        Row::compared(
            "copy_out_4k",
            "copy 4 KiB out of DMA memory",
            "ns",
            api_out,
            raw_out,
        )
        .ratio_at_most(1.5)
        .note("DmaRegion::read_bytes (single-copy atomic 8-byte loads) vs memcpy from plain pages")
        .extra(rounds.clone()),
        Row::compared(
            "write_obj_64",
            "write a 64-byte entry (write_obj)",
            "ns",
            api_obj,
            raw_obj,
        )
        .ratio_at_most(1.5)
        .note("a zerocopy struct through DmaRegion::write_obj vs memcpy of its bytes")
        .extra(rounds),
    ])
}
