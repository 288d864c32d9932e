//! The soundness review's hole sequences, in safe code, must not compile.
//!
//! Each file under `tests/ui/` is one sequence from the review (H1, H2, H3,
//! H5); its `.stderr` is the compiler's refusal. `TRYBUILD=overwrite cargo test
//! -p usrdrv --test compile_fail` regenerates them after a compiler upgrade.

#[test]
fn the_review_sequences_do_not_compile() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/*.rs");
}
