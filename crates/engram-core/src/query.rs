//! Query analysis for the keyword side of a search.
//!
//! Agents ask questions ("When did Caroline go to the support group?"), and
//! in a question the function words carry no evidence: BM25 gives "did",
//! "the" and "to" a small weight each, but over a hundred turns they add up
//! and rank chatty turns above the one that names the support group. The
//! keyword side therefore searches the content words only: English function
//! words and question words are dropped before the index's own analyzer
//! (stemming, lowercase) sees the query. A query made only of such words is
//! kept whole, so it still finds something. Measured on the LoCoMo dev
//! conversations (BENCHMARKS.md, "Retrieval"): evidence fraction@10 of the
//! keyword mode 0.562 → 0.619.
//!
//! The vector side gets the query as written: the embedding model was trained
//! on whole sentences.

/// Function words and question words (a short English list in the spirit of
/// Lucene's and SMART's, plus the auxiliaries questions are made of).
const STOPWORDS: &[&str] = &[
    "a",
    "about",
    "above",
    "after",
    "again",
    "against",
    "all",
    "also",
    "am",
    "an",
    "and",
    "any",
    "are",
    "as",
    "at",
    "be",
    "because",
    "been",
    "before",
    "being",
    "below",
    "between",
    "both",
    "but",
    "by",
    "can",
    "could",
    "did",
    "do",
    "does",
    "doing",
    "don",
    "done",
    "down",
    "during",
    "each",
    "ever",
    "few",
    "for",
    "from",
    "further",
    "had",
    "has",
    "have",
    "having",
    "he",
    "her",
    "here",
    "hers",
    "herself",
    "him",
    "himself",
    "his",
    "how",
    "i",
    "if",
    "in",
    "into",
    "is",
    "it",
    "its",
    "itself",
    "just",
    "kind",
    "may",
    "me",
    "might",
    "more",
    "most",
    "must",
    "my",
    "myself",
    "no",
    "not",
    "now",
    "of",
    "on",
    "or",
    "other",
    "our",
    "ours",
    "ourselves",
    "out",
    "over",
    "own",
    "s",
    "same",
    "shall",
    "she",
    "should",
    "so",
    "some",
    "such",
    "t",
    "than",
    "that",
    "the",
    "their",
    "theirs",
    "them",
    "themselves",
    "then",
    "there",
    "these",
    "they",
    "this",
    "to",
    "too",
    "under",
    "until",
    "up",
    "very",
    "was",
    "we",
    "were",
    "what",
    "when",
    "where",
    "which",
    "who",
    "whom",
    "whose",
    "why",
    "will",
    "with",
    "would",
    "you",
    "your",
    "yours",
    "yourself",
    "yourselves",
];

fn is_stopword(word: &str) -> bool {
    STOPWORDS.binary_search(&word).is_ok()
}

/// The words of `query` the keyword index should search: the alphanumeric
/// runs, lowercased, without stopwords, joined by spaces. When every word is
/// a stopword the query's words are all kept.
pub fn keyword_query(query: &str) -> String {
    let words: Vec<String> = query
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect();
    let content: Vec<&str> = words
        .iter()
        .map(String::as_str)
        .filter(|w| !is_stopword(w))
        .collect();
    if content.is_empty() {
        words.join(" ")
    } else {
        content.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_is_sorted_for_binary_search() {
        assert!(STOPWORDS.windows(2).all(|w| w[0] < w[1]), "sort STOPWORDS");
    }

    #[test]
    fn questions_keep_their_content_words() {
        assert_eq!(
            keyword_query("When did Caroline go to the LGBTQ support group?"),
            "caroline go lgbtq support group"
        );
        assert_eq!(
            keyword_query("What's Melanie's favourite book?"),
            "melanie favourite book"
        );
    }

    #[test]
    fn a_query_of_stopwords_only_is_kept() {
        assert_eq!(keyword_query("Who are you?"), "who are you");
        assert_eq!(keyword_query("?!"), "");
    }

    #[test]
    fn non_ascii_words_survive() {
        assert_eq!(keyword_query("Où est Zoë?"), "où est zoë");
    }
}
