//! `percentile_cont(p) WITHIN GROUP (ORDER BY x)`, exact for `DOUBLE`
//! values, as the reporting views' medians and 90th percentiles use it.
//!
//! DataFusion's own `percentile_cont` rounds the interpolation weight down
//! to a millionth (`INTERPOLATION_PRECISION` in datafusion-functions-
//! aggregate 55): a 90th percentile between 100 s and 700 s can come out
//! 0.0006 s low, and then differs from DuckDB's and Spark's in the sixth
//! digit. This function is DataFusion's, registered under the same names,
//! with one change: for `DOUBLE` input (not `DISTINCT`) the value between
//! the two nearest ranks is `lo + (hi - lo) * f` with the exact fraction
//! `f`, as in DuckDB, Spark and Postgres. Every other case (other types,
//! `DISTINCT`, a percentile that is not a literal) is DataFusion's.
//!
//! The views once computed percentiles with `ROW_NUMBER()` and `COUNT()`
//! windows over a sort of every chat; one aggregate is about 40% faster
//! (BENCHMARKS.md, "The server beside DuckDB").

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, AsArray, BooleanArray, Float64Array, ListArray, PrimitiveArray,
};
use datafusion::arrow::buffer::{OffsetBuffer, ScalarBuffer};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Float64Type};
use datafusion::common::{Result, ScalarValue};
use datafusion::functions_aggregate::percentile_cont::PercentileCont;
use datafusion::logical_expr::function::{
    AccumulatorArgs, AggregateFunctionSimplification, StateFieldsArgs,
};
use datafusion::logical_expr::utils::AggregateOrderSensitivity;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Documentation, EmitTo, GroupsAccumulator,
    Signature,
};
use datafusion::physical_expr::expressions::Literal;
use datafusion_functions_aggregate_common::aggregate::groups_accumulator::accumulate::accumulate;
use datafusion_functions_aggregate_common::aggregate::groups_accumulator::nulls::filtered_null_mask;

/// The function to register (`percentile_cont`, alias `quantile_cont`).
pub(crate) fn udaf() -> AggregateUDF {
    AggregateUDF::new_from_impl(ExactPercentileCont(PercentileCont::new()))
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct ExactPercentileCont(PercentileCont);

impl ExactPercentileCont {
    /// The percentile this call asks for, when it is one this function
    /// computes itself: `DOUBLE` values, not `DISTINCT`, a literal in 0..=1
    /// (`ORDER BY x DESC` asks for 1 - p).
    fn exact(args: &AccumulatorArgs<'_>) -> Option<f64> {
        if args.is_distinct || args.expr_fields[0].data_type() != &DataType::Float64 {
            return None;
        }
        let literal = args.exprs.get(1)?.downcast_ref::<Literal>()?;
        let p = match literal.value() {
            ScalarValue::Float64(Some(p)) => *p,
            ScalarValue::Float32(Some(p)) => f64::from(*p),
            _ => return None,
        };
        if !(0.0..=1.0).contains(&p) {
            return None;
        }
        let descending = args.order_bys.first().is_some_and(|s| s.options.descending);
        Some(if descending { 1.0 - p } else { p })
    }
}

impl AggregateUDFImpl for ExactPercentileCont {
    fn name(&self) -> &str {
        self.0.name()
    }
    fn aliases(&self) -> &[String] {
        self.0.aliases()
    }
    fn signature(&self) -> &Signature {
        self.0.signature()
    }
    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.0.return_type(arg_types)
    }
    fn state_fields(&self, args: StateFieldsArgs<'_>) -> Result<Vec<FieldRef>> {
        self.0.state_fields(args)
    }
    fn accumulator(&self, args: AccumulatorArgs<'_>) -> Result<Box<dyn Accumulator>> {
        match Self::exact(&args) {
            Some(p) => Ok(Box::new(One {
                values: Vec::new(),
                p,
            })),
            None => self.0.accumulator(args),
        }
    }
    fn groups_accumulator_supported(&self, args: AccumulatorArgs<'_>) -> bool {
        self.0.groups_accumulator_supported(args)
    }
    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs<'_>,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        match Self::exact(&args) {
            Some(p) => Ok(Box::new(Groups {
                values: Vec::new(),
                p,
            })),
            None => self.0.create_groups_accumulator(args),
        }
    }
    fn order_sensitivity(&self) -> AggregateOrderSensitivity {
        self.0.order_sensitivity()
    }
    fn simplify(&self) -> Option<AggregateFunctionSimplification> {
        self.0.simplify()
    }
    fn supports_within_group_clause(&self) -> bool {
        self.0.supports_within_group_clause()
    }
    fn documentation(&self) -> Option<&Documentation> {
        self.0.documentation()
    }
}

/// The `p` percentile of `values` (no nulls), interpolating linearly between
/// the two nearest ranks (rank `p * (n - 1)` from 0); None when empty.
fn percentile(values: &mut [f64], p: f64) -> Option<f64> {
    let n = values.len();
    if n == 0 {
        return None;
    }
    let at = p * (n - 1) as f64;
    let lo = (at.floor() as usize).min(n - 1);
    let (_, lo_value, above) = values.select_nth_unstable_by(lo, f64::total_cmp);
    let lo_value = *lo_value;
    let f = at - lo as f64;
    if f == 0.0 || above.is_empty() {
        return Some(lo_value);
    }
    // the next rank is the smallest of the values above
    let hi_value = above
        .iter()
        .copied()
        .min_by(f64::total_cmp)
        .expect("not empty");
    Some(lo_value + (hi_value - lo_value) * f)
}

/// The state of one group: its values, as one list.
fn list_of(groups: Vec<Vec<f64>>) -> ArrayRef {
    let mut offsets = Vec::with_capacity(groups.len() + 1);
    offsets.push(0i32);
    let mut end = 0i32;
    for g in &groups {
        end += g.len() as i32;
        offsets.push(end);
    }
    let values: Vec<f64> = groups.into_iter().flatten().collect();
    Arc::new(ListArray::new(
        Arc::new(Field::new_list_field(DataType::Float64, true)),
        OffsetBuffer::new(ScalarBuffer::from(offsets)),
        Arc::new(PrimitiveArray::<Float64Type>::new(
            ScalarBuffer::from(values),
            None,
        )),
        None,
    ))
}

/// Without GROUP BY (or in a window).
#[derive(Debug)]
struct One {
    values: Vec<f64>,
    p: f64,
}

impl Accumulator for One {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.values
            .extend(values[0].as_primitive::<Float64Type>().iter().flatten());
        Ok(())
    }
    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        for list in states[0].as_list::<i32>().iter().flatten() {
            self.update_batch(&[list])?;
        }
        Ok(())
    }
    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let list = list_of(vec![std::mem::take(&mut self.values)]);
        Ok(vec![ScalarValue::List(Arc::new(
            list.as_list::<i32>().clone(),
        ))])
    }
    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(ScalarValue::Float64(percentile(&mut self.values, self.p)))
    }
    /// A window frame's rows leaving it (`ROWS BETWEEN 2 PRECEDING AND
    /// CURRENT ROW`): each value taken out once.
    fn retract_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        for v in values[0].as_primitive::<Float64Type>().iter().flatten() {
            match self.values.iter().position(|x| x.to_bits() == v.to_bits()) {
                Some(i) => {
                    self.values.swap_remove(i);
                }
                None => {
                    return Err(datafusion::common::DataFusionError::Internal(
                        "percentile_cont: a value leaves a window frame it was never in".into(),
                    ))
                }
            }
        }
        Ok(())
    }
    fn supports_retract_batch(&self) -> bool {
        true
    }
    fn size(&self) -> usize {
        size_of_val(self) + self.values.capacity() * size_of::<f64>()
    }
}

/// With GROUP BY: each group's values.
#[derive(Debug)]
struct Groups {
    values: Vec<Vec<f64>>,
    p: f64,
}

impl GroupsAccumulator for Groups {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.values.resize(total_num_groups, Vec::new());
        let values = values[0].as_primitive::<Float64Type>();
        accumulate(group_indices, values, opt_filter, |g, v| {
            self.values[g].push(v)
        });
        Ok(())
    }
    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.values.resize(total_num_groups, Vec::new());
        let lists = values[0].as_list::<i32>();
        for (list, &g) in lists.iter().zip(group_indices) {
            if let Some(list) = list {
                self.values[g].extend(list.as_primitive::<Float64Type>().iter().flatten());
            }
        }
        Ok(())
    }
    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        Ok(vec![list_of(emit_to.take_needed(&mut self.values))])
    }
    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let groups = emit_to.take_needed(&mut self.values);
        Ok(Arc::new(
            groups
                .into_iter()
                .map(|mut g| percentile(&mut g, self.p))
                .collect::<Float64Array>(),
        ))
    }
    /// Each row as a group of its own (DataFusion skips the partial
    /// aggregation when groups are nearly as many as rows).
    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        // one value per list; a row the filter or a null leaves out is a
        // null list, which merge_batch skips
        let values = values[0].as_primitive::<Float64Type>();
        let rows = i32::try_from(values.len()).map_err(|_| {
            datafusion::common::DataFusionError::Internal(format!(
                "percentile_cont: a batch of {} rows",
                values.len()
            ))
        })?;
        Ok(vec![Arc::new(ListArray::new(
            Arc::new(Field::new_list_field(DataType::Float64, true)),
            OffsetBuffer::new(ScalarBuffer::from((0..=rows).collect::<Vec<i32>>())),
            Arc::new(PrimitiveArray::<Float64Type>::new(
                values.values().clone(),
                None,
            )),
            filtered_null_mask(opt_filter, values),
        ))])
    }
    fn size(&self) -> usize {
        self.values
            .iter()
            .map(|v| v.capacity() * size_of::<f64>())
            .sum::<usize>()
            + self.values.capacity() * size_of::<Vec<f64>>()
    }
}

#[cfg(test)]
mod tests {
    use super::percentile;

    /// Expectations by hand: rank p * (n - 1) from 0, linear between ranks.
    #[test]
    fn interpolates_between_the_two_nearest_ranks_exactly() {
        let p = |v: &[f64], q| percentile(&mut v.to_vec(), q);
        assert_eq!(p(&[], 0.5), None);
        assert_eq!(p(&[7.0], 0.9), Some(7.0));
        // ranks 0..=2 of [1, 2, 10]: 0.9 * 2 = 1.8 -> 2 + 0.8 * (10 - 2)
        assert_eq!(p(&[10.0, 1.0, 2.0], 0.9), Some(2.0 + 0.8 * 8.0));
        assert_eq!(p(&[10.0, 1.0, 2.0], 0.5), Some(2.0));
        // even count: the median halfway between the middle two
        assert_eq!(p(&[4.0, 1.0, 3.0, 2.0], 0.5), Some(2.5));
        assert_eq!(p(&[4.0, 1.0, 3.0, 2.0], 0.0), Some(1.0));
        assert_eq!(p(&[4.0, 1.0, 3.0, 2.0], 1.0), Some(4.0));
        // a case DataFusion's own rounds: 10 values, rank 0.9 * 9 = 8.1
        // (8.0999999999999996 in binary), between 100 and 700: 160, where a
        // weight rounded down to 0.099999 gives 159.9994
        let mut ten = vec![0.0; 8];
        ten.extend([700.0, 100.0]);
        let got = p(&ten, 0.9).unwrap();
        assert!((got - 160.0).abs() < 1e-9, "{got}");
        // ties
        assert_eq!(p(&[5.0, 5.0, 5.0, 9.0], 0.5), Some(5.0));
    }

    /// Rows turned into states one by one (as DataFusion does when it skips
    /// the partial aggregation), then merged: a filtered-out row and a null
    /// add nothing.
    #[test]
    fn rows_as_states_merge_to_the_same_percentile() {
        use datafusion::arrow::array::{ArrayRef, BooleanArray, Float64Array};
        use datafusion::logical_expr::{EmitTo, GroupsAccumulator};
        use std::sync::Arc;
        let mut acc = super::Groups {
            values: Vec::new(),
            p: 0.5,
        };
        let values: ArrayRef = Arc::new(Float64Array::from(vec![
            Some(1.0),
            None,
            Some(1000.0),
            Some(3.0),
            Some(2.0),
        ]));
        // the filter leaves out 1000
        let filter = BooleanArray::from(vec![true, true, false, true, true]);
        let states = acc.convert_to_state(&[values], Some(&filter)).unwrap();
        acc.merge_batch(&states, &[0, 0, 0, 1, 1], 2).unwrap();
        let got = acc.evaluate(EmitTo::All).unwrap();
        let got = got.as_any().downcast_ref::<Float64Array>().unwrap();
        // group 0: [1] -> 1; group 1: [3, 2] -> 2.5
        assert_eq!(got.values().to_vec(), vec![1.0, 2.5]);
    }

    /// Through SQL as the views call it: with and without GROUP BY, with
    /// nulls, DESC (1 - p), and a filter; DataFusion's own, unregistered,
    /// gives the rounded value on the same data.
    #[tokio::test]
    async fn registered_in_place_of_datafusions_own() {
        use datafusion::prelude::SessionContext;
        let data = "(VALUES (1, 0.0), (1, 0.0), (1, 0.0), (1, 0.0), (1, 0.0), (1, 0.0), \
                    (1, 0.0), (1, 0.0), (1, 700.0), (1, 100.0), (1, NULL), (2, 5.0), (3, NULL)) AS t(g, x)";
        let value = |ctx: SessionContext, sql: String| async move {
            let batches = ctx.sql(&sql).await.unwrap().collect().await.unwrap();
            let text = datafusion::arrow::util::pretty::pretty_format_batches(&batches)
                .unwrap()
                .to_string();
            text.lines()
                .filter(|l| l.starts_with("| "))
                .skip(1)
                .map(|l| l.trim_matches(|c| c == '|' || c == ' ').parse::<f64>().ok())
                .collect::<Vec<_>>()
        };
        // within 1e-9 of what the test expects (the rank 8.1 is 8.0999...96)
        let near = |got: Vec<Option<f64>>, want: &[Option<f64>]| {
            got.len() == want.len()
                && got.iter().zip(want).all(|(g, w)| match (g, w) {
                    (Some(g), Some(w)) => (g - w).abs() < 1e-9,
                    (None, None) => true,
                    _ => false,
                })
        };
        let ours = || {
            let ctx = SessionContext::new();
            ctx.register_udaf(super::udaf());
            ctx
        };
        let grouped = format!(
            "SELECT percentile_cont(0.9) WITHIN GROUP (ORDER BY x) FROM {data} GROUP BY g ORDER BY g"
        );
        assert!(near(
            value(ours(), grouped.clone()).await,
            &[Some(160.0), Some(5.0), None]
        ));
        let whole = format!(
            "SELECT percentile_cont(0.9) WITHIN GROUP (ORDER BY x) FROM {data} WHERE g = 1"
        );
        assert!(near(value(ours(), whole).await, &[Some(160.0)]));
        // DESC: the 0.1 percentile from the top is the 0.9 from the bottom
        let desc = format!(
            "SELECT percentile_cont(0.1) WITHIN GROUP (ORDER BY x DESC) FROM {data} WHERE g = 1"
        );
        assert!(near(value(ours(), desc).await, &[Some(160.0)]));
        let filtered = format!(
            "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY x) FILTER (WHERE x > 0) FROM {data} GROUP BY g ORDER BY g"
        );
        assert!(near(
            value(ours(), filtered).await,
            &[Some(400.0), Some(5.0), None]
        ));
        // in a sliding window (the call form: value, then percentile):
        // rows 1..=4 with x = 1, 10, 100, 1000, two rows at a time
        let sliding = "SELECT percentile_cont(x, 0.5) OVER (ORDER BY i ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) \
                       FROM (VALUES (1, 1.0), (2, 10.0), (3, 100.0), (4, 1000.0)) AS t(i, x) ORDER BY i"
            .to_string();
        assert!(near(
            value(ours(), sliding).await,
            &[Some(1.0), Some(5.5), Some(55.0), Some(550.0)]
        ));
        // what this replaces
        let theirs = value(SessionContext::new(), grouped).await;
        assert!(near(theirs, &[Some(159.9994), Some(5.0), None]));
    }
}
