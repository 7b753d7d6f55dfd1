//! Splitting a long reply into messages a platform accepts (Telegram 4096, Discord 2000),
//! on paragraph, then line, then word boundaries, keeping the order. Pure.

/// Length as the platforms count it (UTF-16 code units; Telegram measures so).
fn units(text: &str) -> usize {
    text.chars().map(char::len_utf16).sum()
}

/// Byte index of the longest prefix of `text` within `limit` units.
fn prefix_within(text: &str, limit: usize) -> usize {
    let mut used = 0;
    for (i, c) in text.char_indices() {
        used += c.len_utf16();
        if used > limit {
            return i;
        }
    }
    text.len()
}

/// Splits `text` into parts of at most `limit` units, cutting at the last paragraph break,
/// else line break, else space inside the limit (a word longer than the limit is cut).
/// Whitespace at the cut is dropped; empty parts are never produced.
pub fn split_message(text: &str, limit: usize) -> Vec<String> {
    let limit = limit.max(1);
    let mut parts = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        if units(rest) <= limit {
            parts.push(rest.to_string());
            break;
        }
        let window = &rest[..prefix_within(rest, limit)];
        let cut = ["\n\n", "\n", " "]
            .iter()
            .find_map(|sep| window.rfind(sep).filter(|&at| at > 0))
            .unwrap_or(
                window
                    .len()
                    .max(rest.chars().next().map_or(1, char::len_utf8)),
            );
        let (head, tail) = rest.split_at(cut);
        let head = head.trim_end();
        if !head.is_empty() {
            parts.push(head.to_string());
        }
        rest = tail.trim_start();
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::split_message;

    #[test]
    fn short_text_is_one_part_and_empty_text_none() {
        assert_eq!(split_message("hello", 4096), vec!["hello"]);
        assert!(split_message("  \n ", 4096).is_empty());
    }

    #[test]
    fn prefers_paragraph_then_line_then_word_boundaries() {
        let text = "aaaa bbbb\ncccc\n\ndddd eeee";
        assert_eq!(
            split_message(text, 16),
            vec!["aaaa bbbb\ncccc", "dddd eeee"]
        );
        assert_eq!(
            split_message("aaaa bbbb\ncccc dd", 12),
            vec!["aaaa bbbb", "cccc dd"]
        );
        assert_eq!(
            split_message("aaaa bbbb cccc", 10),
            vec!["aaaa bbbb", "cccc"]
        );
    }

    #[test]
    fn a_word_longer_than_the_limit_is_cut_and_order_is_kept() {
        let text = "x".repeat(9006);
        let parts = split_message(&text, 4096);
        assert_eq!(parts.len(), 3);
        assert!(parts.iter().all(|p| p.len() <= 4096));
        assert_eq!(parts.concat(), text);
    }

    #[test]
    fn counts_utf16_units_and_never_splits_a_character() {
        let text = "😀".repeat(3000); // 2 units each
        let parts = split_message(&text, 4096);
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].chars().count(), 2048);
        assert_eq!(parts.concat(), text);
    }

    #[test]
    fn every_part_fits_and_words_survive() {
        let words: Vec<String> = (0..3000).map(|i| format!("w{i}")).collect();
        let text = words.join(" ");
        let parts = split_message(&text, 100);
        assert!(parts.iter().all(|p| p.chars().count() <= 100));
        assert_eq!(parts.join(" "), text);
    }
}
