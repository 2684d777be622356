#![allow(clippy::print_stdout)]
fn main() {
    let s = rekey::secrets_repo::leaks::Scanner::default();
    for p in std::env::args().skip(1) {
        let b = std::fs::read(&p).unwrap();
        for f in s.scan(&p, &b) {
            println!(
                "{} {:?} {} {} {}",
                f.path,
                f.line,
                f.rule,
                f.chain_text(),
                f.fingerprint
            );
        }
    }
}
