//! `usrdrv bind --driver usrdma`, `usrdrv buffers` and `usrdrv info` against
//! the real usrdma module, in the VM boot without an IOMMU (`cargo xtask test`
//! loads the module there).

use std::process::{Command, Output};

use usrdrv::dma::DmaMask;
use usrdrv::pci::{PciAddress, Sysfs};
use usrdrv::{Backend, Device};

fn usrdrv(args: &[&str]) -> Output {
    Command::new("usrdrv")
        .args(args)
        .output()
        .expect("usrdrv is in the VM's PATH")
}

fn ok(args: &[&str]) -> serde_json::Value {
    let mut all = args.to_vec();
    all.push("--json");
    let out = usrdrv(&all);
    assert!(
        out.status.success(),
        "usrdrv {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON")
}

fn edu() -> PciAddress {
    Sysfs::system().find(0x1234, 0x11e8).expect("scan sysfs")[0]
}

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
fn edu_goes_to_usrdma_its_buffers_are_listed_and_it_comes_back() {
    let address = edu();
    let addr = address.to_string();
    let sysfs = Sysfs::system();
    // Start from no driver, without the CLI (which would remember the
    // driver edu had, and `restore` would go back to it).
    if sysfs.driver(address).unwrap().is_some() {
        sysfs.unbind(address).unwrap();
    }

    let bound = ok(&["bind", &addr, "--driver", "usrdma"]);
    assert_eq!(bound["changes"][0]["to"], "usrdma");
    assert_eq!(bound["changes"][0]["node"], format!("/dev/usrdma/{addr}"));
    assert!(std::path::Path::new(&format!("/dev/usrdma/{addr}")).exists());

    // A persistent buffer, left behind by a process that has exited (here:
    // a handle that is dropped), is listed system-wide with its address.
    let device = Device::open_with(Backend::Usrdma, address, DmaMask::new(28).unwrap()).unwrap();
    let kept = device.alloc_persistent("cli-listed", 3 * 4096).unwrap();
    let device_addr = format!("{:#x}", kept.device_addr());
    drop(kept);
    drop(device);
    let listed = ok(&["buffers"]);
    assert_eq!(listed["usrdma_loaded"], true);
    assert_eq!(listed["devices"][0], addr.as_str());
    let buffer = &listed["buffers"][0];
    assert_eq!(buffer["name"], "cli-listed");
    assert_eq!(buffer["size"], 3 * 4096);
    assert_eq!(buffer["persistent"], true);
    assert_eq!(buffer["device_addr"], device_addr.as_str());
    let table = String::from_utf8(usrdrv(&["buffers"]).stdout).unwrap();
    assert!(table.contains("cli-listed"), "{table}");

    let info = ok(&["info", &addr]);
    assert_eq!(info["usrdma"]["stats"]["buffers"], 1, "{info}");

    // Freed by name through the API; the listing follows.
    let device = Device::open(address, DmaMask::new(28).unwrap()).unwrap();
    device.free_persistent("cli-listed").unwrap();
    drop(device);
    assert_eq!(
        ok(&["buffers"])["buffers"].as_array().map(Vec::len),
        Some(0)
    );

    // Back to no driver, as it was before `usrdrv bind`.
    ok(&["restore", &addr]);
    assert_eq!(sysfs.driver(address).unwrap(), None);
}
