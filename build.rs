// refinery embeds migrations/ at compile time but does not tell cargo to watch the folder.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
    println!("cargo:rerun-if-changed=assets");
}
