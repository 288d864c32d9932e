//! The `usrdma` section of `usrdrv info`: for a device bound to the usrdma
//! module, its node, counters and buffers, from the module's read-only sysfs
//! attributes (the device is not opened).

use serde::Serialize;
use usrdrv::pci::PciAddress;
use usrdrv::usrdma::listing::{self, ListingError};

use crate::context::Context;
use crate::output::{Style, Tone, human_size};
use crate::usrdma_view::{self, BufferJson, StatsJson};

/// `usrdma` in `usrdrv.info/1`; `None` there when the device is not bound
/// to usrdma.
#[derive(Debug, Serialize)]
pub struct Usrdma {
    /// `/dev/usrdma/ADDR`.
    node: String,
    /// `None` when the attributes could not be read (see `error`).
    stats: Option<StatsJson>,
    buffers: Option<Vec<BufferJson>>,
    /// Why stats or buffers are missing.
    error: Option<String>,
    /// For the text only: whether the node exists.
    #[serde(skip)]
    node_present: bool,
}

/// The section for `address`, bound to `driver`. Unreadable or malformed
/// attributes do not fail `info`: the section says what went wrong.
pub fn gather(ctx: &Context, address: PciAddress, driver: Option<&str>) -> Option<Usrdma> {
    if driver != Some(usrdma_view::USRDMA_DRIVER) {
        return None;
    }
    let node = usrdma_view::node(ctx, address);
    let mut errors = Vec::new();
    let stats = keep(listing::stats(&ctx.sysfs, address), &mut errors).map(|s| StatsJson::from(&s));
    let buffers = keep(listing::buffers(&ctx.sysfs, address), &mut errors).map(|found| {
        found
            .iter()
            .map(|b| BufferJson::new(ctx, address, b))
            .collect()
    });
    Some(Usrdma {
        node_present: node.exists(),
        node: node.display().to_string(),
        stats,
        buffers,
        error: (!errors.is_empty()).then(|| errors.join("; ")),
    })
}

/// The value, or `None` with the error (on one line) added to `errors`.
fn keep<T>(result: Result<T, ListingError>, errors: &mut Vec<String>) -> Option<T> {
    result.map_err(|e| errors.push(with_sources(&e))).ok()
}

/// An error and its causes on one line.
fn with_sources(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// The text of the section, from its heading on.
pub fn render(style: &Style, u: &Usrdma) -> String {
    let mut out = String::from("\nusrdma\n");
    let field = |label: &str, value: String| format!("  {label:<14}{value}\n");
    let missing = if u.node_present {
        String::new()
    } else {
        style.paint(Tone::Warn, " (missing: is devtmpfs mounted on /dev?)")
    };
    out.push_str(&field("node", format!("{}{missing}", u.node)));
    if let Some(s) = &u.stats {
        out.push_str(&field(
            "open",
            if s.opened {
                "yes: a process has the node open".to_owned()
            } else {
                "no".to_owned()
            },
        ));
        out.push_str(&field(
            "buffers",
            format!("{} ({})", s.buffers, human_size(s.buffer_bytes)),
        ));
        out.push_str(&field(
            "user memory",
            format!(
                "{} mapped for DMA, {} pinned, {} bounced",
                plural(s.user_mappings, "mapping", "mappings"),
                plural(s.pinned_pages, "page", "pages"),
                human_size(s.bounce_bytes)
            ),
        ));
        out.push_str(&field(
            "interrupts",
            format!(
                "{} set up, {} signalled since the module was loaded",
                plural(s.irqs, "vector", "vectors"),
                s.irq_count
            ),
        ));
        if let Some(q) = &s.quarantine {
            out.push_str(&field(
                "quarantine",
                if q.buffers == 0 && q.bytes == 0 && q.pages == 0 {
                    "empty".to_owned()
                } else {
                    format!(
                        "{} ({}) and {} pinned kept from released owners until the device is \
                         reset, declared quiesced, or bus mastering stays off for the grace period",
                        plural(q.buffers, "buffer", "buffers"),
                        human_size(q.bytes),
                        plural(q.pages, "page", "pages")
                    )
                },
            ));
        }
    }
    if let Some(buffers) = &u.buffers
        && !buffers.is_empty()
    {
        out.push('\n');
        let table = usrdma_view::buffer_table(buffers, false).render(style);
        out.extend(table.lines().map(|l| format!("  {l}\n")));
    }
    if let Some(error) = &u.error {
        out.push_str(&format!("  {}\n", style.paint(Tone::Bad, error)));
    }
    out
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}
