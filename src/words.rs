//! Words in messages: a count with its noun in the right number, for every
//! layer that writes a message (the CLI's output, the workflows' status
//! lines, log lines).

/// Returns `1 host`, `2 hosts`: a count with its noun in the right number.
pub fn plural(n: usize, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_is_singular_and_every_other_count_plural() {
        assert_eq!(plural(1, "region", "regions"), "1 region");
        assert_eq!(plural(0, "region", "regions"), "0 regions");
        assert_eq!(plural(2, "host", "hosts"), "2 hosts");
        assert_eq!(plural(11, "changed file", "changed files"), "11 changed files");
    }
}
