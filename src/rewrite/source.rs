//! A task file made ready for the rules: Jinja substituted, tokenized once, split into
//! statements at top-level semicolons and parsed statement by statement (so one unparseable
//! statement never hides the others), with parser locations turned into byte offsets of the
//! user's text.

use std::ops::Range;

use sqlparser::ast::{
    Assignment, Expr, Ident, ObjectName, ObjectNamePart, SetExpr, Spanned, Statement, With,
};
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::{Location, Span, Token, TokenWithSpan, Tokenizer};

use super::jinja::{self, DbtConfig, RegionKind, Templated};
use super::{Dialect, KnownKeys, SqlError};
use crate::config::TableName;

/// Byte offsets of line starts, for turning parser locations (1-based line, 1-based column in
/// characters) into byte offsets and back.
#[derive(Debug, Clone)]
pub struct LineIndex {
    text: String,
    starts: Vec<usize>,
}

impl LineIndex {
    pub fn new(text: &str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex {
            text: text.to_string(),
            starts,
        }
    }

    /// The byte offset of a parser location (clamped to the text).
    pub fn offset(&self, loc: Location) -> usize {
        let line = (loc.line as usize).max(1);
        let Some(&start) = self.starts.get(line - 1) else {
            return self.text.len();
        };
        let rest = &self.text[start..];
        let column = (loc.column as usize).max(1) - 1;
        start
            + rest
                .char_indices()
                .nth(column)
                .map(|(i, _)| i)
                .unwrap_or(rest.len())
    }

    /// The 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = self.starts.partition_point(|&s| s <= offset);
        let start = self.starts[line - 1];
        let column = self
            .text
            .get(start..offset)
            .map(|s| s.chars().count())
            .unwrap_or(0);
        (line, column + 1)
    }
}

/// One token with its byte range.
#[derive(Debug, Clone)]
pub struct Tok {
    pub token: Token,
    pub range: Range<usize>,
}

/// One parsed statement.
#[derive(Debug, Clone)]
pub struct Stmt {
    /// The statement; a `WITH ... INSERT/UPDATE/DELETE/MERGE` is unwrapped to its DML (see
    /// [`unwrap_with`]), so every rule sees the write.
    pub ast: Statement,
    /// The `WITH` clause of an unwrapped `WITH ... <DML>`.
    pub with: Option<With>,
    /// From the first to the end of the last significant token.
    pub range: Range<usize>,
    /// The `;` that ends it, when there is one.
    pub semicolon: Option<usize>,
    /// True when a `BEGIN`/`START TRANSACTION` before it is still open (always for a
    /// statement inside a CTE: it runs with the statement that holds it).
    pub in_transaction: bool,
    /// True for the DML of a data-modifying CTE. natkey reports findings there but leaves the
    /// edit to the user.
    pub in_cte: bool,
}

/// A table as the SQL names it.
#[derive(Debug, Clone, PartialEq)]
pub struct TableTarget {
    pub name: TableName,
    /// True when the table part was quoted (then names match exactly).
    pub quoted: bool,
}

impl std::fmt::Display for TableTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.name)
    }
}

/// Everything the rules read about one file.
pub struct FileContext<'a> {
    /// The user's text.
    pub text: &'a str,
    /// The text with Jinja replaced by placeholders (same offsets).
    pub templated: Templated,
    pub source: LineIndex,
    pub tokens: Vec<Tok>,
    pub statements: Vec<Stmt>,
    pub errors: Vec<SqlError>,
    pub dialect: Dialect,
    pub keys: &'a KnownKeys,
    pub dbt: Option<DbtConfig>,
    /// The file's stem: the table a dbt model builds (`{{ this }}`).
    pub model: Option<String>,
}

impl<'a> FileContext<'a> {
    pub fn new(file: &str, text: &'a str, dialect: Dialect, keys: &'a KnownKeys) -> Self {
        let templated = jinja::substitute(text);
        let source = LineIndex::new(&templated.text);
        let dbt = jinja::dbt_config(text, &templated);
        let model = std::path::Path::new(file)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned());
        let mut cx = FileContext {
            text,
            templated,
            source,
            tokens: Vec::new(),
            statements: Vec::new(),
            errors: Vec::new(),
            dialect,
            keys,
            dbt,
            model,
        };
        cx.parse();
        cx
    }

    fn parse(&mut self) {
        let parser_dialect = self.dialect.parser();
        let raw = self.tokenize_resynchronising(parser_dialect.as_ref());
        self.tokens = raw
            .iter()
            .map(|t| Tok {
                token: t.token.clone(),
                range: self
                    .templated
                    .snap(self.source.offset(t.span.start)..self.source.offset(t.span.end)),
            })
            .collect();
        let mut in_transaction = false;
        let mut start = 0;
        for i in 0..=raw.len() {
            let at_end = i == raw.len();
            if !at_end && raw[i].token != Token::SemiColon {
                continue;
            }
            let chunk = start..i;
            start = i + 1;
            let significant: Vec<usize> = chunk
                .clone()
                .filter(|&j| !matches!(raw[j].token, Token::Whitespace(_) | Token::EOF))
                .collect();
            let (Some(&first), Some(&last)) = (significant.first(), significant.last()) else {
                continue;
            };
            let tokens: Vec<TokenWithSpan> = raw[chunk.clone()].to_vec();
            match parse_one(parser_dialect.as_ref(), tokens) {
                Ok(ast) if nested_dml(&ast) => self.errors.push(SqlError {
                    line: raw[first].span.start.line as usize,
                    column: raw[first].span.start.column as usize,
                    message: "an INSERT's rows cannot come from another INSERT, UPDATE, DELETE \
                              or MERGE (a missing SELECT or semicolon?)"
                        .to_string(),
                }),
                Ok(ast) => {
                    let (ast, with) = unwrap_with(ast);
                    let opens = matches!(ast, Statement::StartTransaction { .. });
                    let closes =
                        matches!(ast, Statement::Commit { .. } | Statement::Rollback { .. });
                    let range = self.tokens[first].range.start..self.tokens[last].range.end;
                    // Data-modifying CTEs (`WITH ins AS (INSERT ... RETURNING ...) SELECT ...`)
                    // write too: each is read as a statement of its own, before the statement
                    // that holds it (PostgreSQL runs them in one snapshot, atomically).
                    let ctes = match (&ast, &with) {
                        (_, Some(w)) => Some(w),
                        (Statement::Query(q), None) => q.with.as_ref(),
                        _ => None,
                    };
                    for cte in ctes.iter().flat_map(|w| &w.cte_tables) {
                        if let SetExpr::Insert(dml)
                        | SetExpr::Update(dml)
                        | SetExpr::Delete(dml)
                        | SetExpr::Merge(dml) = cte.query.body.as_ref()
                        {
                            let inner = self.span_extent(cte.query.span());
                            self.statements.push(Stmt {
                                ast: dml.clone(),
                                with: None,
                                range: if inner.is_empty() {
                                    range.clone()
                                } else {
                                    inner
                                },
                                semicolon: None,
                                in_transaction: true,
                                in_cte: true,
                            });
                        }
                    }
                    self.statements.push(Stmt {
                        ast,
                        with,
                        range,
                        semicolon: (!at_end).then(|| self.tokens[i].range.start),
                        in_transaction,
                        in_cte: false,
                    });
                    if opens {
                        in_transaction = true;
                    }
                    if closes {
                        in_transaction = false;
                    }
                }
                Err(e) => self.errors.push(parser_error(e, raw[first].span.start)),
            }
        }
    }

    /// Tokenizes the templated text. A tokenizer error (an unterminated quote or comment) is
    /// reported with its line and column, and the statement it sits in is blanked out — from
    /// the end of the statement before it to the next `;` after the error — so that the
    /// statements before it, and after it where a `;` lets the tokenizer resynchronise, are
    /// still analysed. Blanking keeps every byte offset (and line) of the text.
    fn tokenize_resynchronising(
        &mut self,
        dialect: &dyn sqlparser::dialect::Dialect,
    ) -> Vec<TokenWithSpan> {
        let mut text = self.templated.text.clone();
        // Each round blanks the error's position, so the rounds are bounded by the text.
        for _ in 0..text.len().max(1) {
            let mut tokens = Vec::new();
            let e =
                match Tokenizer::new(dialect, &text).tokenize_with_location_into_buf(&mut tokens) {
                    Ok(()) => {
                        if text != self.templated.text {
                            self.source = LineIndex::new(&text);
                        }
                        return tokens;
                    }
                    Err(e) => e,
                };
            self.errors.push(SqlError {
                line: e.location.line as usize,
                column: e.location.column as usize,
                message: e.message,
            });
            // `tokens` holds what was read before the failing token: the failing token starts
            // where the last one ended, its statement after the last `;`.
            let index = LineIndex::new(&text);
            let at = tokens
                .last()
                .map(|t| index.offset(t.span.end))
                .unwrap_or(0)
                .min(index.offset(e.location));
            let start = tokens
                .iter()
                .rev()
                .find(|t| t.token == Token::SemiColon)
                .map(|t| index.offset(t.span.end))
                .unwrap_or(0);
            let end = text[at..]
                .find(';')
                .map(|p| at + p + 1)
                .unwrap_or(text.len());
            let blanked: String = text[start..end]
                .chars()
                .map(|c| {
                    if c == '\n' {
                        "\n".to_string()
                    } else {
                        " ".repeat(c.len_utf8())
                    }
                })
                .collect();
            text.replace_range(start..end, &blanked);
        }
        Vec::new()
    }

    /// The byte range of an AST node, widened to balance parentheses (sqlparser's spans of
    /// calls stop before their closing parenthesis).
    ///
    /// An expression that ends in a call without arguments (`gen_random_uuid()`, `x + now()`)
    /// has a span that stops at the name: it is widened over the `()` too.
    pub fn extent<T: Spanned + 'static>(&self, node: &T) -> Range<usize> {
        let range = self.span_extent(node.span());
        let any: &dyn std::any::Any = node;
        let is_expression = any.is::<Expr>() || any.is::<Assignment>();
        if !is_expression || range.is_empty() {
            return range;
        }
        let mut after = self
            .tokens
            .iter()
            .skip_while(|t| t.range.start < range.end)
            .filter(|t| !matches!(t.token, Token::Whitespace(_)));
        let ends_in_word = self
            .tokens
            .iter()
            .rev()
            .find(|t| t.range.end <= range.end && !matches!(t.token, Token::Whitespace(_)))
            .is_some_and(|t| matches!(t.token, Token::Word(_)));
        match (ends_in_word, after.next(), after.next()) {
            (true, Some(open), Some(close))
                if open.token == Token::LParen && close.token == Token::RParen =>
            {
                range.start..close.range.end
            }
            _ => range,
        }
    }

    /// [`FileContext::extent`] of a span.
    pub fn span_extent(&self, span: Span) -> Range<usize> {
        if span.start.line == 0 {
            return 0..0;
        }
        let start = self.source.offset(span.start);
        let mut end = self.source.offset(span.end);
        let mut depth: i64 = 0;
        for t in self.tokens.iter().filter(|t| t.range.start >= start) {
            if t.range.start >= end && depth <= 0 {
                break;
            }
            match t.token {
                Token::LParen => depth += 1,
                Token::RParen => depth -= 1,
                _ => {}
            }
            if t.range.start >= end {
                end = t.range.end;
            }
        }
        self.templated.snap(start..end)
    }

    /// The user's text of an AST node (Jinja included).
    pub fn text_of<T: Spanned + 'static>(&self, node: &T) -> &'a str {
        let r = self.extent(node);
        self.text.get(r).unwrap_or("")
    }

    /// The table an object name stands for: the last two parts, with Jinja resolved where it
    /// names a table (`{{ this }}` is the model, `{{ ref('x') }}` is `x`, `{{ source('s', 't')
    /// }}` is `s.t`).
    pub fn table(&self, name: &ObjectName) -> TableTarget {
        let idents: Vec<&Ident> = name.0.iter().filter_map(ObjectNamePart::as_ident).collect();
        let resolve = |ident: &Ident| -> (String, bool) {
            let at = self.source.offset(ident.span.start);
            match self.templated.expression_at(at) {
                Some(region) if region.kind == RegionKind::Expression => {
                    (self.jinja_table(&region.inner), false)
                }
                _ => (ident.value.clone(), ident.quote_style.is_some()),
            }
        };
        match idents.as_slice() {
            [.., schema, table] => {
                let (schema, _) = resolve(schema);
                let (table, quoted) = resolve(table);
                TableTarget {
                    name: TableName {
                        schema: Some(schema),
                        name: table,
                    },
                    quoted,
                }
            }
            [table] => {
                let (table, quoted) = resolve(table);
                match table.parse::<TableName>() {
                    Ok(name) if !quoted && table.contains('.') => TableTarget {
                        name,
                        quoted: false,
                    },
                    _ => TableTarget {
                        name: TableName {
                            schema: None,
                            name: table,
                        },
                        quoted,
                    },
                }
            }
            [] => TableTarget {
                name: TableName {
                    schema: None,
                    name: name.to_string(),
                },
                quoted: false,
            },
        }
    }

    fn jinja_table(&self, inner: &str) -> String {
        let args = |call: &str| -> Option<Vec<String>> {
            let rest = inner.strip_prefix(call)?.trim_start().strip_prefix('(')?;
            let rest = rest.strip_suffix(')')?;
            Some(
                rest.split(',')
                    .map(|a| a.trim().trim_matches(['\'', '"']).to_string())
                    .collect(),
            )
        };
        if inner == "this"
            && let Some(model) = &self.model
        {
            return model.clone();
        }
        if let Some(a) = args("ref")
            && let Some(last) = a.last()
        {
            return last.clone();
        }
        if let Some(a) = args("source")
            && a.len() == 2
        {
            return format!("{}.{}", a[0], a[1]);
        }
        format!("{{{{ {inner} }}}}")
    }
}

/// sqlparser reads `WITH c AS (...) INSERT ...` (and UPDATE, DELETE, MERGE) as a query
/// whose body is the DML. The rules look for the DML, so it is unwrapped here; the `WITH`
/// clause is kept beside it, and an INSERT's source query gets it as its own `WITH` (the same
/// meaning: `INSERT INTO t WITH c AS (...) SELECT ... FROM c`), so the rules that read the
/// source also read the CTEs. Spans are those of the user's tokens either way.
pub(crate) fn unwrap_with(ast: Statement) -> (Statement, Option<With>) {
    let Statement::Query(query) = ast else {
        return (ast, None);
    };
    let inner = match query.body.as_ref() {
        SetExpr::Insert(s) | SetExpr::Update(s) | SetExpr::Delete(s) | SetExpr::Merge(s) => {
            s.clone()
        }
        _ => return (Statement::Query(query), None),
    };
    let with = query.with.clone();
    match inner {
        Statement::Insert(mut insert) => {
            if let (Some(w), Some(source)) = (&with, insert.source.as_mut())
                && source.with.is_none()
            {
                source.with = Some(w.clone());
            }
            (Statement::Insert(insert), with)
        }
        other => (other, with),
    }
}

/// sqlparser accepts `INSERT INTO t (a) INSERT INTO t (a) SELECT ...` (the source query's body
/// may be DML); no engine does, and the rules would misread it.
fn nested_dml(ast: &Statement) -> bool {
    let insert = match ast {
        Statement::Insert(i) => i,
        Statement::Query(q) => match q.body.as_ref() {
            SetExpr::Insert(Statement::Insert(i)) => i,
            _ => return false,
        },
        _ => return false,
    };
    insert.source.as_deref().is_some_and(|q| {
        matches!(
            q.body.as_ref(),
            SetExpr::Insert(_) | SetExpr::Update(_) | SetExpr::Delete(_) | SetExpr::Merge(_)
        )
    })
}

fn parse_one(
    dialect: &dyn sqlparser::dialect::Dialect,
    tokens: Vec<TokenWithSpan>,
) -> Result<Statement, ParserError> {
    let mut parser = Parser::new(dialect).with_tokens_with_locations(tokens);
    let statement = parser.parse_statement()?;
    let next = parser.peek_token();
    if next.token != Token::EOF {
        return parser.expected("end of statement", next);
    }
    Ok(statement)
}

/// The parser's message without its ` at Line: L, Column: C` suffix, which becomes the
/// error's own line and column.
fn parser_error(e: ParserError, fallback: Location) -> SqlError {
    let message = match e {
        ParserError::TokenizerError(m) | ParserError::ParserError(m) => m,
        ParserError::RecursionLimitExceeded => {
            "the statement nests too deeply for natkey's parser".to_string()
        }
    };
    if let Some(p) = message.rfind(" at Line: ") {
        let position = &message[p + " at Line: ".len()..];
        if let Some((line, column)) = position.split_once(", Column: ")
            && let (Ok(line), Ok(column)) = (line.trim().parse(), column.trim().parse())
        {
            return SqlError {
                line,
                column,
                message: message[..p].to_string(),
            };
        }
    }
    SqlError {
        line: fallback.line as usize,
        column: fallback.column as usize,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_index_round_trips_offsets_with_wide_characters() {
        let text = "SELECT 'é'\n  , x";
        let idx = LineIndex::new(text);
        let at = text.find('x').expect("x");
        assert_eq!(idx.line_col(at), (2, 5));
        assert_eq!(idx.offset(Location::new(2, 5)), at);
        assert_eq!(
            idx.offset(Location::new(1, 11)),
            text.find('\n').expect("nl")
        );
    }

    #[test]
    fn statements_know_their_ranges_semicolons_and_transactions() {
        let keys = KnownKeys::new();
        let text =
            "BEGIN;\n-- note\nDELETE FROM t WHERE a = 1 ;\nCOMMIT;\nINSERT INTO t VALUES (1)";
        let cx = FileContext::new("x.sql", text, Dialect::Postgres, &keys);
        assert!(cx.errors.is_empty(), "{:?}", cx.errors);
        assert_eq!(cx.statements.len(), 4);
        let delete = &cx.statements[1];
        assert_eq!(&text[delete.range.clone()], "DELETE FROM t WHERE a = 1");
        assert_eq!(delete.semicolon.map(|s| &text[s..s + 1]), Some(";"));
        assert!(delete.in_transaction);
        assert!(!cx.statements[3].in_transaction);
        assert_eq!(cx.statements[3].semicolon, None);
    }

    #[test]
    fn extents_include_closing_parentheses() {
        let keys = KnownKeys::new();
        let text = "SELECT coalesce(max(a), 0) + 1 FROM t";
        let cx = FileContext::new("x.sql", text, Dialect::Postgres, &keys);
        let Statement::Query(q) = &cx.statements[0].ast else {
            panic!("a query");
        };
        let sqlparser::ast::SetExpr::Select(s) = q.body.as_ref() else {
            panic!("a select");
        };
        let sqlparser::ast::SelectItem::UnnamedExpr(e) = &s.projection[0] else {
            panic!("an expression");
        };
        assert_eq!(cx.text_of(e), "coalesce(max(a), 0) + 1");
        if let sqlparser::ast::Expr::BinaryOp { left, .. } = e {
            assert_eq!(cx.text_of(left.as_ref()), "coalesce(max(a), 0)");
        }
    }
}
