//! How a table's rows become Parquet bytes: the writer settings every
//! chatlake file shares, and the one rule that picks each column chunk's
//! codec (zstd only where it saves enough to be worth undoing).

use std::sync::Arc;

use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use parquet::arrow::arrow_writer::{
    compute_leaves, ArrowColumnChunk, ArrowColumnWriter, ArrowLeafColumn,
};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::metadata::{ColumnChunkMetaData, SortingColumn};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use crate::schema::{Personal, TableDef};

/// `batch` (rows of `table`) as a Parquet file in memory (it is never
/// larger than the batch). Each column chunk is compressed with zstd only
/// where zstd saves at least an eighth of it and at least 4 KiB: every
/// compressed chunk costs each reader a zstd context and a pass to undo it
/// (about 40 µs a chunk, an eighth of a reporting view's CPU when the
/// warehouse was zstd throughout), and dictionary-encoded ids and names, and
/// delta-packed times, come out barely smaller or larger (BENCHMARKS.md,
/// "Times delta-packed, and zstd only where it saves").
///
/// Each column chunk is encoded on its own, with zstd; a chunk that saved
/// too little is encoded again uncompressed, that column alone, before it is
/// appended to the file. Row groups are cut as the `ArrowWriter` cuts them
/// (at its default row count).
pub(super) fn encode(batch: &RecordBatch, table: &TableDef) -> Result<Vec<u8>, ParquetError> {
    let props = writer_properties(table);
    let max_rows = props.max_row_group_row_count().unwrap_or(usize::MAX);
    encode_in_groups(batch, props, max_rows)
}

/// [`encode`] with the settings `props` ([`writer_properties`]), in row
/// groups of at most `max_rows` rows.
fn encode_in_groups(
    batch: &RecordBatch,
    props: WriterProperties,
    max_rows: usize,
) -> Result<Vec<u8>, ParquetError> {
    let max_rows = max_rows.max(1);
    let plain = props
        .clone()
        .into_builder()
        .set_compression(Compression::UNCOMPRESSED)
        .build();
    let schema = batch.schema();
    // The ArrowWriter sets up the file as it always does (the Arrow schema
    // in the footer, the Parquet schema); its column writer factories are
    // then driven a chunk at a time.
    let (_, plain_columns) =
        ArrowWriter::try_new(std::io::sink(), Arc::clone(&schema), Some(plain))?
            .into_serialized_writer()?;
    let mut out = Vec::new();
    let (mut file, zstd_columns) =
        ArrowWriter::try_new(&mut out, Arc::clone(&schema), Some(props))?
            .into_serialized_writer()?;
    let mut offset = 0;
    while offset < batch.num_rows() {
        let rows = batch.slice(offset, max_rows.min(batch.num_rows() - offset));
        offset += rows.num_rows();
        let index = file.flushed_row_groups().len();
        let mut zstd_writers = zstd_columns.create_column_writers(index)?.into_iter();
        let mut plain_writers: Option<Vec<Option<ArrowColumnWriter>>> = None;
        let mut group = file.next_row_group()?;
        // A column's leaves (its levels) at a time, and a chunk at a time
        // in memory: each is appended to the file as soon as it is encoded.
        let mut i = 0;
        for (field, column) in schema.fields().iter().zip(rows.columns()) {
            for leaf in compute_leaves(field, column)? {
                let writer = zstd_writers.next().ok_or_else(|| no_writer(i))?;
                let mut chunk = encode_chunk(writer, &leaf)?;
                if zstd_saves_little(&chunk.close().metadata) {
                    let writers = match &mut plain_writers {
                        Some(w) => w,
                        None => plain_writers.insert(
                            plain_columns
                                .create_column_writers(index)?
                                .into_iter()
                                .map(Some)
                                .collect(),
                        ),
                    };
                    let writer = writers
                        .get_mut(i)
                        .and_then(Option::take)
                        .ok_or_else(|| no_writer(i))?;
                    chunk = encode_chunk(writer, &leaf)?;
                }
                chunk.append_to_row_group(&mut group)?;
                i += 1;
            }
        }
        group.close()?;
    }
    file.close()?;
    Ok(out)
}

fn no_writer(leaf: usize) -> ParquetError {
    ParquetError::General(format!("no column writer for leaf column {leaf}"))
}

fn encode_chunk(
    mut writer: ArrowColumnWriter,
    leaf: &ArrowLeafColumn,
) -> Result<ArrowColumnChunk, ParquetError> {
    writer.write(leaf)?;
    writer.close()
}

/// zstd stays on a column chunk only when it saves at least this many bytes...
const ZSTD_MIN_SAVING_BYTES: i64 = 4096;
/// ...and at least this fraction (1/n) of the chunk.
const ZSTD_MIN_SAVING_DIVISOR: i64 = 8;

/// Whether a chunk compressed with zstd saves less than
/// [`ZSTD_MIN_SAVING_BYTES`] or less than 1/[`ZSTD_MIN_SAVING_DIVISOR`] of
/// the same chunk uncompressed.
fn zstd_saves_little(chunk: &ColumnChunkMetaData) -> bool {
    let (packed, raw) = (chunk.compressed_size(), chunk.uncompressed_size());
    let saved = raw - packed;
    saved < ZSTD_MIN_SAVING_BYTES || saved * ZSTD_MIN_SAVING_DIVISOR < raw
}

/// The settings of a file written as its batches come
/// ([`super::Warehouse::replace_partition_with`]), whose chunks are not
/// held to be encoded again: the delta-packed columns, which zstd barely
/// shrinks, are left uncompressed.
pub(super) fn streamed_properties(table: &TableDef) -> WriterProperties {
    delta_packed(table)
        .into_iter()
        .fold(writer_properties(table).into_builder(), |p, c| {
            p.set_column_compression(c, Compression::UNCOMPRESSED)
        })
        .build()
}

/// zstd (left off per column chunk where it saves little: see [`encode`]),
/// numbers and times delta-packed (see [`delta_packed`]), page statistics,
/// and the sort order recorded in the footer.
fn writer_properties(table: &TableDef) -> WriterProperties {
    let sorting: Vec<SortingColumn> = table
        .sort_by
        .iter()
        .map(|c| SortingColumn {
            column_idx: table.index_of(c).expect("validated sort column") as i32,
            descending: false,
            nulls_first: false,
        })
        .collect();
    let mut props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(3).expect("valid level"),
        ))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_sorting_columns(Some(sorting))
        .set_created_by(concat!("chatlake ", env!("CARGO_PKG_VERSION")).into());
    // Bloom filters on the columns that find one person (emails, phones,
    // person ids, hashed or not): a point lookup by email, in chatlake,
    // DuckDB or Spark, skips the row groups that cannot hold it.
    for c in &table.columns {
        if matches!(
            c.personal,
            Some(Personal::Email | Personal::Phone | Personal::PersonId)
        ) {
            props = props.set_column_bloom_filter_enabled(c.name.as_str().into(), true);
        }
    }
    for c in delta_packed(table) {
        props = props
            .set_column_dictionary_enabled(c.clone(), false)
            .set_column_encoding(c, Encoding::DELTA_BINARY_PACKED);
    }
    props.build()
}

/// The columns written DELTA_BINARY_PACKED rather than with a dictionary:
/// integers, timestamps and dates. Times are nearly all distinct, so a
/// dictionary holds every value once plus an index for each row; the
/// differences between neighbouring rows (sorted by time) pack into a few
/// bytes a value without zstd, and decode without a gather (BENCHMARKS.md,
/// "Times delta-packed, and zstd only where it saves"). DuckDB, Spark,
/// pyarrow and polars read the encoding.
fn delta_packed(table: &TableDef) -> Vec<ColumnPath> {
    table
        .file_schema()
        .fields()
        .iter()
        .filter(|f| {
            matches!(
                f.data_type(),
                DataType::Int64 | DataType::Timestamp(..) | DataType::Date32
            )
        })
        .map(|f| ColumnPath::from(f.name().as_str()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{
        ArrayRef, Int64Array, ListBuilder, StringArray, StringBuilder, TimestampMicrosecondArray,
    };
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use parquet::file::reader::{FileReader, SerializedFileReader};

    /// `rows` rows shaped like `table`: random text (zstd saves nothing),
    /// repeated text (zstd saves much), times a second apart.
    fn rows(table: &TableDef, rows: usize) -> RecordBatch {
        let schema = table.file_schema();
        let mut rng = fastrand::Rng::with_seed(7);
        let columns: Vec<ArrayRef> = schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| -> ArrayRef {
                match f.data_type() {
                    DataType::Utf8 if i % 2 == 0 => Arc::new(StringArray::from_iter_values(
                        (0..rows).map(|_| format!("{:016x}", rng.u64(..))),
                    )),
                    DataType::Utf8 => Arc::new(StringArray::from_iter_values(
                        (0..rows).map(|r| format!("the same long text, row group {}", r / 700)),
                    )),
                    DataType::Int64 => Arc::new(Int64Array::from_iter_values(
                        (0..rows).map(|r| r as i64 * 3),
                    )),
                    DataType::Timestamp(_, tz) => Arc::new(
                        TimestampMicrosecondArray::from_iter_values(
                            (0..rows).map(|r| 1_700_000_000_000_000 + r as i64 * 1_000_000),
                        )
                        .with_timezone_opt(tz.clone()),
                    ),
                    DataType::List(item) => {
                        let mut b =
                            ListBuilder::new(StringBuilder::new()).with_field(Arc::clone(item));
                        for r in 0..rows {
                            match r % 3 {
                                0 => b.append_null(),
                                n => {
                                    for k in 0..n {
                                        b.values().append_value(format!("tag {}", (r + k) % 5));
                                    }
                                    b.append(true);
                                }
                            }
                        }
                        Arc::new(b.finish())
                    }
                    _ => arrow::array::new_null_array(f.data_type(), rows),
                }
            })
            .collect();
        RecordBatch::try_new(schema, columns).unwrap()
    }

    /// The file the high-level `ArrowWriter` writes with the codec of each
    /// column chosen from its all-zstd chunk: what [`encode`] must equal,
    /// byte for byte, for a file of one row group.
    fn reference(batch: &RecordBatch, table: &TableDef) -> Vec<u8> {
        let write = |props: WriterProperties| {
            let mut out = Vec::new();
            let mut w = ArrowWriter::try_new(&mut out, batch.schema(), Some(props)).unwrap();
            w.write(batch).unwrap();
            let meta = w.close().unwrap();
            (out, meta)
        };
        let (_, all_zstd) = write(writer_properties(table));
        let props = all_zstd.row_group(0).columns().iter().fold(
            writer_properties(table).into_builder(),
            |p, c| {
                if zstd_saves_little(c) {
                    p.set_column_compression(c.column_path().clone(), Compression::UNCOMPRESSED)
                } else {
                    p
                }
            },
        );
        write(props.build()).0
    }

    #[test]
    fn one_row_group_is_what_the_arrow_writer_writes_with_the_chosen_codecs() {
        // a list column too (its leaf has repetition levels)
        let lists = crate::schema::table("crm.conversations");
        let batch = rows(lists, 2000);
        assert!(batch
            .schema()
            .fields()
            .iter()
            .any(|f| matches!(f.data_type(), DataType::List(_))));
        assert_eq!(encode(&batch, lists).unwrap(), reference(&batch, lists));
        let table = crate::schema::table("socialintents.chats");
        let batch = rows(table, 2000);
        let file = encode(&batch, table).unwrap();
        assert_eq!(file, reference(&batch, table));
        let reader = SerializedFileReader::new(bytes::Bytes::from(file)).unwrap();
        let codecs: std::collections::BTreeSet<String> = reader
            .metadata()
            .row_group(0)
            .columns()
            .iter()
            .map(|c| format!("{:?}", c.compression()))
            .collect();
        // both codecs chosen, so both paths of `encode` ran
        assert_eq!(codecs.len(), 2, "{codecs:?}");
    }

    #[test]
    fn no_rows_is_a_file_with_no_row_group() {
        let table = crate::schema::table("socialintents.chats");
        let batch = rows(table, 0);
        let file = encode(&batch, table).unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(file)).unwrap();
        assert_eq!(reader.metadata().num_row_groups(), 0);
        assert_eq!(reader.schema().fields(), batch.schema().fields());
    }

    #[test]
    fn row_groups_choose_their_codecs_each_and_read_back_whole() {
        // with a list column: its values cut with their rows
        let table = crate::schema::table("crm.conversations");
        let batch = rows(table, 2500);
        let file = encode_in_groups(&batch, writer_properties(table), 1000).unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(file)).unwrap();
        let meta = reader.metadata().clone();
        let sizes: Vec<i64> = meta.row_groups().iter().map(|g| g.num_rows()).collect();
        assert_eq!(sizes, [1000, 1000, 500]);
        for (g, group) in meta.row_groups().iter().enumerate() {
            // each group's codecs are those of a file of its rows alone
            let alone = batch.slice(g * 1000, group.num_rows() as usize);
            let alone =
                SerializedFileReader::new(bytes::Bytes::from(reference(&alone, table))).unwrap();
            let expected = alone
                .metadata()
                .row_group(0)
                .columns()
                .iter()
                .map(|c| c.compression());
            let got = group.columns().iter().map(|c| c.compression());
            assert!(got.eq(expected), "row group {g}");
        }
        let back: Vec<RecordBatch> = reader.build().unwrap().map(|b| b.unwrap()).collect();
        let back = arrow::compute::concat_batches(&batch.schema(), &back).unwrap();
        assert_eq!(back, batch);
    }
}
