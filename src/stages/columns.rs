//! Column access for operators: a stage sees a batch through its resolved column map (logical
//! name -> column), gets typed, zero-copy views of list and scalar columns, and builds per-token
//! outputs that share the row layout of the `segments` list.
//!
//! Invariant: list views honour the array's offsets (batches may be slices of larger ones); the
//! output of [`per_token_f32`] always has exactly the offsets of its template list, rebased to 0.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float32Array, ListArray, PrimitiveArray, RecordBatch, StringArray,
};
use arrow::buffer::{OffsetBuffer, ScalarBuffer};
use arrow::datatypes::{ArrowPrimitiveType, Field, Float32Type};

/// A batch as one stage sees it.
pub struct StageInput<'a> {
    batch: &'a RecordBatch,
    read: &'a BTreeMap<String, String>,
}

/// A zero-copy view of a `list<T>` column of primitives.
pub struct Lists<'a, T> {
    offsets: &'a [i32],
    values: &'a [T],
    nulls: Option<&'a arrow::buffer::NullBuffer>,
}

impl<'a, T> Lists<'a, T> {
    /// The list of row `i` (empty for a null list).
    pub fn row(&self, i: usize) -> &'a [T] {
        if self.nulls.is_some_and(|n| n.is_null(i)) {
            return &[];
        }
        &self.values[self.offsets[i] as usize..self.offsets[i + 1] as usize]
    }

    /// Whether row `i` is null.
    pub fn is_null(&self, i: usize) -> bool {
        self.nulls.is_some_and(|n| n.is_null(i))
    }

    /// The offsets (length rows + 1), not rebased.
    pub fn offsets(&self) -> &'a [i32] {
        self.offsets
    }
}

impl<'a> StageInput<'a> {
    /// Binds `batch` with the stage's column map.
    pub fn new(batch: &'a RecordBatch, read: &'a BTreeMap<String, String>) -> Self {
        StageInput { batch, read }
    }

    /// The whole batch, for readers of the trajectory schema's fixed columns (what
    /// [`crate::run::examples::drawn_rows`] reads).
    pub fn batch(&self) -> &'a RecordBatch {
        self.batch
    }

    /// Number of rows.
    pub fn num_rows(&self) -> usize {
        self.batch.num_rows()
    }

    /// The physical column name of `logical`.
    pub fn name<'b>(&'b self, logical: &'b str) -> &'b str {
        self.read.get(logical).map(String::as_str).unwrap_or(logical)
    }

    /// The column for `logical`, if present.
    pub fn column(&self, logical: &str) -> Option<&'a ArrayRef> {
        self.batch.column_by_name(self.name(logical))
    }

    fn required(&self, logical: &str) -> Result<&'a ArrayRef, String> {
        self.column(logical).ok_or_else(|| format!("column '{}' is missing", self.name(logical)))
    }

    /// A `list<T>` column.
    pub fn lists<T: ArrowPrimitiveType>(&self, logical: &str) -> Result<Lists<'a, T::Native>, String> {
        let arr = self.required(logical)?;
        let list = arr
            .as_list_opt::<i32>()
            .ok_or_else(|| format!("column '{}' is {}, expected a list", self.name(logical), arr.data_type()))?;
        let values = list
            .values()
            .as_primitive_opt::<T>()
            .ok_or_else(|| format!("column '{}' has items of type {}", self.name(logical), list.value_type()))?;
        Ok(Lists { offsets: list.value_offsets(), values: values.values(), nulls: list.nulls() })
    }

    /// An optional `list<T>` column (absent column = None).
    pub fn opt_lists<T: ArrowPrimitiveType>(&self, logical: &str) -> Result<Option<Lists<'a, T::Native>>, String> {
        match self.column(logical) {
            None => Ok(None),
            Some(_) => self.lists::<T>(logical).map(Some),
        }
    }

    /// A primitive scalar column.
    pub fn scalars<T: ArrowPrimitiveType>(&self, logical: &str) -> Result<&'a PrimitiveArray<T>, String> {
        let arr = self.required(logical)?;
        arr.as_primitive_opt::<T>()
            .ok_or_else(|| format!("column '{}' is {}, expected {}", self.name(logical), arr.data_type(), T::DATA_TYPE))
    }

    /// An optional primitive scalar column.
    pub fn opt_scalars<T: ArrowPrimitiveType>(&self, logical: &str) -> Result<Option<&'a PrimitiveArray<T>>, String> {
        match self.column(logical) {
            None => Ok(None),
            Some(_) => self.scalars::<T>(logical).map(Some),
        }
    }

    /// A boolean column.
    pub fn bools(&self, logical: &str) -> Result<&'a BooleanArray, String> {
        let arr = self.required(logical)?;
        arr.as_boolean_opt()
            .ok_or_else(|| format!("column '{}' is {}, expected bool", self.name(logical), arr.data_type()))
    }

    /// A utf8 column.
    pub fn strings(&self, logical: &str) -> Result<&'a StringArray, String> {
        let arr = self.required(logical)?;
        arr.as_string_opt::<i32>()
            .ok_or_else(|| format!("column '{}' is {}, expected utf8", self.name(logical), arr.data_type()))
    }
}

/// The value of an optional f32 scalar at row `i` (None when the column is absent or null).
pub fn opt_value(col: Option<&PrimitiveArray<Float32Type>>, i: usize) -> Option<f32> {
    col.filter(|c| c.is_valid(i)).map(|c| c.value(i))
}

/// Fills one value vector with the row layout of `template` (offsets rebased to 0): row `i` is
/// `fill(i, out)` with `out` of the template row's length, starting at `T::default()`.
fn per_token<T: Clone + Default, U>(
    template: &Lists<'_, U>,
    rows: usize,
    mut fill: impl FnMut(usize, &mut [T]) -> Result<(), String>,
) -> Result<(OffsetBuffer<i32>, Vec<T>), String> {
    let base = template.offsets[0];
    let offsets: Vec<i32> = template.offsets[..=rows].iter().map(|o| o - base).collect();
    let mut values = vec![T::default(); offsets[rows] as usize];
    for i in 0..rows {
        fill(i, &mut values[offsets[i] as usize..offsets[i + 1] as usize])?;
    }
    Ok((OffsetBuffer::new(ScalarBuffer::from(offsets)), values))
}

fn list_array(offsets: OffsetBuffer<i32>, values: ArrayRef) -> ArrayRef {
    let field = Arc::new(Field::new("item", values.data_type().clone(), true));
    Arc::new(ListArray::new(field, offsets, values, None))
}

/// Builds a `list<float32>` with the row layout of `template`, filling row `i` with `fill(i, out)`
/// where `out` has the length of the template's row `i` and starts zeroed.
pub fn per_token_f32<U>(
    template: &Lists<'_, U>,
    rows: usize,
    fill: impl FnMut(usize, &mut [f32]) -> Result<(), String>,
) -> Result<ArrayRef, String> {
    let (offsets, values) = per_token(template, rows, fill)?;
    Ok(list_array(offsets, Arc::new(Float32Array::from(values))))
}

/// Two `list<float32>` columns with the row layout of `template`, filled together: row `i` of
/// both is `fill(i, first, second)` (both start zeroed), for operators that compute two per-token
/// outputs in one pass.
pub fn per_token_f32_pair<U>(
    template: &Lists<'_, U>,
    rows: usize,
    mut fill: impl FnMut(usize, &mut [f32], &mut [f32]) -> Result<(), String>,
) -> Result<(ArrayRef, ArrayRef), String> {
    let mut second = Vec::with_capacity((template.offsets[rows] - template.offsets[0]) as usize);
    let (offsets, first) = per_token(template, rows, |i, out: &mut [f32]| {
        let start = second.len();
        second.resize(start + out.len(), 0.0);
        fill(i, out, &mut second[start..])
    })?;
    let arrays = (
        list_array(offsets.clone(), Arc::new(Float32Array::from(first))),
        list_array(offsets, Arc::new(Float32Array::from(second))),
    );
    Ok(arrays)
}

/// Builds a `list<bool>` with the row layout of `template` (rows start all false).
pub fn per_token_bool<U>(
    template: &Lists<'_, U>,
    rows: usize,
    fill: impl FnMut(usize, &mut [bool]) -> Result<(), String>,
) -> Result<ArrayRef, String> {
    let (offsets, values) = per_token(template, rows, fill)?;
    Ok(list_array(offsets, Arc::new(BooleanArray::from(values))))
}
