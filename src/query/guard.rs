//! What a statement may be before it is planned: read-only (statements
//! that write are refused by their first word, with a reason), and not so
//! deep that planning it would exhaust the stack.

use crate::error::{Error, Result};

/// Most operators one statement may hold. Planning and evaluating an
/// expression recurse once per operator; a statement like `SELECT 1+1+...`
/// with thousands of terms would otherwise exhaust the stack and abort.
pub const MAX_OPERATORS: usize = 1000;

/// Most `->`/`->>` operators one statement may hold.
pub const MAX_JSON_ARROWS: usize = 12;

/// Refuses a statement with more than [`MAX_OPERATORS`] operators, with an
/// error that says so (instead of a stack overflow).
pub(super) fn check_size(sql: &str) -> Result<()> {
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::keywords::Keyword;
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, sql).tokenize() else {
        return Ok(()); // the parser will say what is wrong
    };
    let operators = tokens
        .iter()
        .filter(|t| match t {
            Token::Plus
            | Token::Minus
            | Token::Mul
            | Token::Div
            | Token::Mod
            | Token::StringConcat
            | Token::DuckIntDiv => true,
            Token::Eq
            | Token::DoubleEq
            | Token::Spaceship
            | Token::Neq
            | Token::Lt
            | Token::Gt
            | Token::LtEq
            | Token::GtEq => true,
            // Bitwise operators, casts, JSON and regex operators.
            Token::Ampersand
            | Token::Pipe
            | Token::Caret
            | Token::ShiftLeft
            | Token::ShiftRight
            | Token::Sharp
            | Token::Tilde
            | Token::TildeAsterisk
            | Token::ExclamationMarkTilde
            | Token::ExclamationMarkTildeAsterisk
            | Token::DoubleColon
            | Token::Arrow
            | Token::LongArrow
            | Token::HashArrow
            | Token::HashLongArrow
            | Token::AtArrow
            | Token::ArrowAt
            | Token::Question
            | Token::QuestionAnd
            | Token::QuestionPipe => true,
            // Each parenthesis nests: a call, a subquery, a group.
            Token::LParen => true,
            Token::Word(w) => matches!(
                w.keyword,
                Keyword::AND
                    | Keyword::OR
                    | Keyword::NOT
                    | Keyword::XOR
                    | Keyword::UNION
                    | Keyword::INTERSECT
                    | Keyword::EXCEPT
                    | Keyword::AT
                    | Keyword::LIKE
                    | Keyword::ILIKE
                    | Keyword::SIMILAR
                    | Keyword::IS
                    | Keyword::IN
                    | Keyword::BETWEEN
                    | Keyword::WHEN
                    | Keyword::COLLATE
            ),
            _ => false,
        })
        .count();
    // `->` and `->>` (the JSON functions) plan in time exponential in how
    // many a statement chains: 24 took over a minute.
    let json = tokens
        .iter()
        .filter(|t| matches!(t, Token::Arrow | Token::LongArrow))
        .count();
    if json > MAX_JSON_ARROWS {
        return Err(Error::Usage(format!(
            "the statement has {json} `->`/`->>` operators; at most {MAX_JSON_ARROWS} are accepted in one statement (planning them takes time exponential in their number); use json_get(_extra, 'a', 'b', ...) with a path instead"
        )));
    }
    if operators > MAX_OPERATORS {
        return Err(Error::Usage(format!(
            "the statement has {operators} operators; at most {MAX_OPERATORS} are accepted in one statement (an expression that deep would exhaust the stack)"
        )));
    }
    Ok(())
}

/// Statements that write, refused by their first word with a reason
/// (before parsing: `COPY ... TO '/x'` gave a parser error about `STORED`).
pub(super) fn refuse_writes(text: &str) -> Result<()> {
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, text).tokenize() else {
        return Ok(()); // the parser will say what is wrong
    };
    let mut first = true;
    for t in &tokens {
        match t {
            Token::Whitespace(_) => {}
            Token::SemiColon => first = true,
            Token::Word(w) if first => {
                let word = w.value.to_ascii_uppercase();
                const WRITES: [&str; 12] = [
                    "COPY", "INSERT", "UPDATE", "DELETE", "MERGE", "CREATE", "DROP", "ALTER",
                    "TRUNCATE", "SET", "RESET", "ATTACH",
                ];
                if WRITES.contains(&word.as_str()) {
                    return Err(Error::Usage(format!(
                        "{word} is refused: queries are read-only (to save a result, use --out FILE with .csv, .json, .ndjson or .parquet)"
                    )));
                }
                first = false;
            }
            _ => first = false,
        }
    }
    Ok(())
}
