//! Rebuilds this crate when a file in `migrations/` changes or is added:
//! `refinery::embed_migrations!` reads that directory at compile time, and
//! cargo would not otherwise know to run it again.

fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
