//! Pseudo-random inputs for running fuzz bodies in the normal tests: a fixed seed, so a failure
//! repeats, and a bounded count, so the tests stay fast. Every protocol crate's unit tests feed
//! their parser's fuzz body with these (the fuzzers proper are in `fuzz/`).

/// `count` inputs, each the concatenation of up to `max_tokens` tokens picked from `tokens`
/// by an xorshift generator seeded with `seed`. Tokens may be single bytes or whole keywords;
/// keywords make many inputs parse, so the checks after a successful parse run too.
pub fn inputs(seed: u64, count: usize, max_tokens: usize, tokens: &[&[u8]]) -> Vec<Vec<u8>> {
    assert!(!tokens.is_empty() && max_tokens > 0, "nothing to generate from");
    let mut state = seed | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    (0..count)
        .map(|_| {
            let n = (next() % max_tokens as u64) as usize;
            (0..n).flat_map(|_| tokens[(next() % tokens.len() as u64) as usize].iter().copied()).collect()
        })
        .collect()
}

/// The bytes of `alphabet` as one-byte tokens for [`inputs`].
pub fn bytes_of(alphabet: &[u8]) -> Vec<&[u8]> {
    alphabet.chunks(1).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_same_seed_gives_the_same_inputs_within_bounds() {
        let tokens: [&[u8]; 2] = [b"ab", b"c"];
        let a = super::inputs(7, 100, 5, &tokens);
        assert_eq!(a, super::inputs(7, 100, 5, &tokens));
        assert!(a.iter().all(|i| i.len() <= 4 * 2));
        assert!(a.iter().any(|i| !i.is_empty()));
    }
}
