//! Self-contained reader for GGUF model files (llama.cpp's container format), std only.
//!
//! Layout of a GGUF file (all integers little-endian; versions 2 and 3 are accepted, version 1
//! used 32-bit counts and is rejected, as are big-endian files):
//!
//! ```text
//! magic "GGUF" | version u32 | tensor_count u64 | kv_count u64
//! kv_count   x { key: string, value_type: u32, value }
//! tensor_count x { name: string, n_dims: u32, dims: [u64; n_dims], ggml_type: u32, offset: u64 }
//! padding up to `general.alignment` (default 32)
//! tensor data section: tensor i starts at data_offset + offset_i
//! ```
//!
//! A string is a `u64` byte length followed by UTF-8 bytes (no terminator); an array value is
//! `element_type: u32, len: u64` followed by `len` values of that type (arrays may nest).
//! Tensor dims are listed fastest-varying first (`dims[0]` is the contiguous row length), so
//! the PyTorch/numpy shape is the *reverse* of the GGUF dims: `token_embd.weight` with GGUF
//! dims `[576, 49152]` is a `[49152, 576]` matrix. Quantised types pack `dims[0]` into blocks
//! of `block_size` elements (32 for Q4_0/Q4_1/Q5_0/Q5_1/Q8_0, 256 for the K-quants), so
//! `dims[0]` must be a multiple of the block size and a tensor occupies
//! `n_elements / block_size * type_size` bytes.
//!
//! Invariants established by [`Gguf::open`]: the header, every metadata value and every tensor
//! info was read completely; tensor names are unique; the data section starts at an
//! `alignment`-aligned offset; every tensor offset is aligned, and every tensor whose type has
//! a known size lies entirely inside the file. Tensor bytes are not read at open time:
//! [`Gguf::tensor_bytes`] and [`Gguf::tensor_f32`] reopen the file and read only the tensor
//! asked for, so opening a multi-gigabyte model is cheap. Nothing read from the file is
//! trusted: lengths are checked against the file size before allocating, and every failure is
//! a [`GgufError`] naming the file.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// The four magic bytes every GGUF file starts with.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
/// Data-section alignment used when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Maximum tensor rank accepted (ggml's `GGML_MAX_DIMS`).
pub const MAX_DIMS: usize = 4;
/// Maximum nesting depth of array metadata values accepted.
const MAX_ARRAY_DEPTH: usize = 8;

/// Error from opening a GGUF file or reading a tensor out of it. Every variant names the file.
#[derive(Debug)]
pub enum GgufError {
    /// The operating system failed to open, seek or read the file.
    Io {
        /// The GGUF file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The file does not start with `GGUF`.
    BadMagic {
        /// The GGUF file.
        path: PathBuf,
        /// The first four bytes found instead.
        found: [u8; 4],
    },
    /// A GGUF version this reader does not handle (only 2 and 3 are supported).
    UnsupportedVersion {
        /// The GGUF file.
        path: PathBuf,
        /// The version field as read (little-endian).
        version: u32,
    },
    /// The file ended (or a length points) before the end of something that must be there.
    Truncated {
        /// The GGUF file.
        path: PathBuf,
        /// Byte offset at which the missing item starts.
        offset: u64,
        /// What was being read.
        what: String,
    },
    /// Structurally invalid content (bad UTF-8, unknown value type, misaligned offset, ...).
    Invalid {
        /// The GGUF file.
        path: PathBuf,
        /// Byte offset of the offending item, where known.
        offset: Option<u64>,
        /// What is wrong.
        what: String,
    },
    /// The tensor's ggml type cannot be dequantised (or sized) by this reader.
    UnsupportedType {
        /// The GGUF file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// Its ggml type.
        ggml_type: GgmlType,
    },
    /// No tensor with this name exists in the file.
    NoSuchTensor {
        /// The GGUF file.
        path: PathBuf,
        /// The name asked for.
        name: String,
    },
    /// A required metadata key is missing or has the wrong type.
    Metadata {
        /// The GGUF file.
        path: PathBuf,
        /// The key.
        key: String,
        /// What was expected.
        expected: &'static str,
    },
}

impl fmt::Display for GgufError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GgufError::Io { path, source } => {
                write!(f, "GGUF file {}: I/O error: {source}", path.display())
            }
            GgufError::BadMagic { path, found } => {
                write!(f, "GGUF file {}: bad magic {:02x?} (expected \"GGUF\"); not a GGUF file", path.display(), found)
            }
            GgufError::UnsupportedVersion { path, version } => {
                let hint = if version.swap_bytes() <= 3 {
                    " (looks like a big-endian GGUF file, which is not supported)"
                } else {
                    ""
                };
                write!(f, "GGUF file {}: unsupported GGUF version {version}{hint}; supported: 2, 3", path.display())
            }
            GgufError::Truncated { path, offset, what } => write!(
                f,
                "GGUF file {}: truncated: {what} at byte {offset} runs past the end of the file",
                path.display()
            ),
            GgufError::Invalid { path, offset, what } => match offset {
                Some(o) => write!(f, "GGUF file {}: invalid at byte {o}: {what}", path.display()),
                None => write!(f, "GGUF file {}: invalid: {what}", path.display()),
            },
            GgufError::UnsupportedType { path, tensor, ggml_type } => write!(
                f,
                "GGUF file {}: tensor {tensor:?} has ggml type {ggml_type}, which this reader \
                 cannot dequantise",
                path.display()
            ),
            GgufError::NoSuchTensor { path, name } => {
                write!(f, "GGUF file {}: no tensor named {name:?}", path.display())
            }
            GgufError::Metadata { path, key, expected } => {
                write!(f, "GGUF file {}: metadata key {key:?} is missing or not {expected}", path.display())
            }
        }
    }
}

impl std::error::Error for GgufError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            GgufError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// A metadata value. Integer and float variants keep the exact width stored in the file.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// GGUF type 0.
    U8(u8),
    /// GGUF type 1.
    I8(i8),
    /// GGUF type 2.
    U16(u16),
    /// GGUF type 3.
    I16(i16),
    /// GGUF type 4.
    U32(u32),
    /// GGUF type 5.
    I32(i32),
    /// GGUF type 10.
    U64(u64),
    /// GGUF type 11.
    I64(i64),
    /// GGUF type 6.
    F32(f32),
    /// GGUF type 12.
    F64(f64),
    /// GGUF type 7 (one byte, 0 or 1).
    Bool(bool),
    /// GGUF type 8.
    String(String),
    /// GGUF type 9: homogeneous array (the element type is stored once in the file).
    Array(Vec<Value>),
}

impl Value {
    /// The value as `u64`, for any integer variant holding a non-negative number.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as `i64`, for any integer variant whose value fits.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => i64::try_from(v).ok(),
            Value::I8(v) => Some(v.into()),
            Value::I16(v) => Some(v.into()),
            Value::I32(v) => Some(v.into()),
            Value::I64(v) => Some(v),
            _ => None,
        }
    }

    /// The value as `usize` (see [`Value::as_u64`]).
    pub fn as_usize(&self) -> Option<usize> {
        self.as_u64().and_then(|v| usize::try_from(v).ok())
    }

    /// The value as `f64`, for float and integer variants (large 64-bit integers round).
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v.into()),
            Value::F64(v) => Some(v),
            Value::U64(v) => Some(v as f64),
            Value::I64(v) => Some(v as f64),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    /// The value as `bool`, for the `Bool` variant only.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// The string, for the `String` variant only.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The elements, for the `Array` variant only.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    /// The elements as string slices, if this is an array whose elements are all strings.
    pub fn as_str_array(&self) -> Option<Vec<&str>> {
        self.as_array()?.iter().map(Value::as_str).collect()
    }

    /// The elements as `i64`, if this is an array whose elements are all integers that fit.
    pub fn as_i64_array(&self) -> Option<Vec<i64>> {
        self.as_array()?.iter().map(Value::as_i64).collect()
    }

    /// The elements as `u64`, if this is an array of non-negative integers.
    pub fn as_u64_array(&self) -> Option<Vec<u64>> {
        self.as_array()?.iter().map(Value::as_u64).collect()
    }

    /// The elements as `f64`, if this is an array of numbers.
    pub fn as_f64_array(&self) -> Option<Vec<f64>> {
        self.as_array()?.iter().map(Value::as_f64).collect()
    }

    /// Name of the GGUF value type, e.g. `"u32"`, `"string"`, `"array"`.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::U8(_) => "u8",
            Value::I8(_) => "i8",
            Value::U16(_) => "u16",
            Value::I16(_) => "i16",
            Value::U32(_) => "u32",
            Value::I32(_) => "i32",
            Value::U64(_) => "u64",
            Value::I64(_) => "i64",
            Value::F32(_) => "f32",
            Value::F64(_) => "f64",
            Value::Bool(_) => "bool",
            Value::String(_) => "string",
            Value::Array(_) => "array",
        }
    }
}

/// A ggml tensor element type, as stored in a tensor info. Unknown ids are kept as `Other`
/// so that files containing them still open; such tensors cannot be read.
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GgmlType {
    /// 32-bit float (id 0).
    F32,
    /// IEEE half (id 1).
    F16,
    /// 32-element blocks: f16 scale + 4-bit quants, offset 8 (id 2).
    Q4_0,
    /// 32-element blocks: f16 scale, f16 min + 4-bit quants (id 3).
    Q4_1,
    /// 32-element blocks: f16 scale + 5-bit quants, offset 16 (id 6).
    Q5_0,
    /// 32-element blocks: f16 scale, f16 min + 5-bit quants (id 7).
    Q5_1,
    /// 32-element blocks: f16 scale + i8 quants (id 8).
    Q8_0,
    /// 32-element blocks: f16 scale, f16 sum + i8 quants (id 9; activations only).
    Q8_1,
    /// K-quant, 2 bits (id 10).
    Q2_K,
    /// K-quant, 3 bits (id 11).
    Q3_K,
    /// K-quant, 4 bits, 256-element super-blocks (id 12).
    Q4_K,
    /// K-quant, 5 bits, 256-element super-blocks (id 13).
    Q5_K,
    /// K-quant, 6 bits, 256-element super-blocks (id 14).
    Q6_K,
    /// K-quant, 8 bits: f32 scale + i8 quants + i16 block sums (id 15).
    Q8_K,
    /// 8-bit integer (id 24).
    I8,
    /// 16-bit integer (id 25).
    I16,
    /// 32-bit integer (id 26).
    I32,
    /// 64-bit integer (id 27).
    I64,
    /// 64-bit float (id 28).
    F64,
    /// bfloat16 (id 30).
    BF16,
    /// Any other id (IQ quants, removed types, future types).
    Other(u32),
}

impl GgmlType {
    /// Map a ggml type id to a type.
    pub fn from_id(id: u32) -> GgmlType {
        match id {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            2 => GgmlType::Q4_0,
            3 => GgmlType::Q4_1,
            6 => GgmlType::Q5_0,
            7 => GgmlType::Q5_1,
            8 => GgmlType::Q8_0,
            9 => GgmlType::Q8_1,
            10 => GgmlType::Q2_K,
            11 => GgmlType::Q3_K,
            12 => GgmlType::Q4_K,
            13 => GgmlType::Q5_K,
            14 => GgmlType::Q6_K,
            15 => GgmlType::Q8_K,
            24 => GgmlType::I8,
            25 => GgmlType::I16,
            26 => GgmlType::I32,
            27 => GgmlType::I64,
            28 => GgmlType::F64,
            30 => GgmlType::BF16,
            other => GgmlType::Other(other),
        }
    }

    /// The ggml type id.
    pub fn id(self) -> u32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Q4_0 => 2,
            GgmlType::Q4_1 => 3,
            GgmlType::Q5_0 => 6,
            GgmlType::Q5_1 => 7,
            GgmlType::Q8_0 => 8,
            GgmlType::Q8_1 => 9,
            GgmlType::Q2_K => 10,
            GgmlType::Q3_K => 11,
            GgmlType::Q4_K => 12,
            GgmlType::Q5_K => 13,
            GgmlType::Q6_K => 14,
            GgmlType::Q8_K => 15,
            GgmlType::I8 => 24,
            GgmlType::I16 => 25,
            GgmlType::I32 => 26,
            GgmlType::I64 => 27,
            GgmlType::F64 => 28,
            GgmlType::BF16 => 30,
            GgmlType::Other(id) => id,
        }
    }

    /// `(elements per block, bytes per block)`, or `None` for types of unknown layout.
    pub fn block_layout(self) -> Option<(u64, u64)> {
        Some(match self {
            GgmlType::F32 | GgmlType::I32 => (1, 4),
            GgmlType::F16 | GgmlType::BF16 | GgmlType::I16 => (1, 2),
            GgmlType::I8 => (1, 1),
            GgmlType::I64 | GgmlType::F64 => (1, 8),
            GgmlType::Q4_0 => (32, 18),
            GgmlType::Q4_1 => (32, 20),
            GgmlType::Q5_0 => (32, 22),
            GgmlType::Q5_1 => (32, 24),
            GgmlType::Q8_0 => (32, 34),
            GgmlType::Q8_1 => (32, 36),
            GgmlType::Q2_K => (256, 84),
            GgmlType::Q3_K => (256, 110),
            GgmlType::Q4_K => (256, 144),
            GgmlType::Q5_K => (256, 176),
            GgmlType::Q6_K => (256, 210),
            GgmlType::Q8_K => (256, 292),
            GgmlType::Other(_) => return None,
        })
    }

    /// Whether [`dequantize`] supports this type.
    pub fn can_dequantize(self) -> bool {
        matches!(
            self,
            GgmlType::F32
                | GgmlType::F16
                | GgmlType::BF16
                | GgmlType::Q4_0
                | GgmlType::Q4_1
                | GgmlType::Q5_0
                | GgmlType::Q5_1
                | GgmlType::Q8_0
                | GgmlType::Q4_K
                | GgmlType::Q5_K
                | GgmlType::Q6_K
                | GgmlType::Q8_K
        )
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GgmlType::Other(id) => write!(f, "ggml type id {id}"),
            other => write!(f, "{other:?}"),
        }
    }
}

/// Description of one tensor, as stored in the file's tensor-info table.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    /// Tensor name, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// Dimensions in GGUF order: fastest-varying (contiguous) first. See [`TensorInfo::shape`].
    pub dims: Vec<u64>,
    /// Element type.
    pub ggml_type: GgmlType,
    /// Byte offset of the tensor data relative to the data section ([`Gguf::data_offset`]).
    pub offset: u64,
}

impl TensorInfo {
    /// Shape in PyTorch/numpy (row-major) order, i.e. the GGUF dims reversed.
    pub fn shape(&self) -> Vec<usize> {
        // Fits on 64-bit targets; for known types open() checked the byte size is addressable.
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }

    /// Number of elements (product of dims; 1 for a scalar), `None` on overflow.
    pub fn n_elements(&self) -> Option<u64> {
        self.dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d))
    }

    /// Size of the tensor's data in bytes, `None` for an unknown type, a row length that is
    /// not a multiple of the block size, or overflow.
    pub fn n_bytes(&self) -> Option<u64> {
        let (block, size) = self.ggml_type.block_layout()?;
        let row = self.dims.first().copied().unwrap_or(1);
        if !row.is_multiple_of(block) {
            return None;
        }
        (self.n_elements()? / block).checked_mul(size)
    }
}

/// A parsed GGUF file: header, metadata and tensor table. Tensor data stays on disk until
/// asked for.
#[derive(Debug, Clone)]
pub struct Gguf {
    /// GGUF format version (2 or 3).
    pub version: u32,
    /// All metadata key/value pairs.
    pub metadata: BTreeMap<String, Value>,
    /// Tensor infos in file order.
    pub tensors: Vec<TensorInfo>,
    /// Data-section alignment (`general.alignment`, default 32).
    pub alignment: u64,
    /// Absolute byte offset of the tensor data section.
    pub data_offset: u64,
    /// Size of the file in bytes when it was opened.
    pub file_len: u64,
    path: PathBuf,
    index: BTreeMap<String, usize>,
}

impl Gguf {
    /// Open and parse a GGUF file: header, metadata and tensor infos (not the tensor data).
    pub fn open(path: impl AsRef<Path>) -> Result<Gguf, GgufError> {
        let path = path.as_ref().to_path_buf();
        let io_err = |source| GgufError::Io { path: path.clone(), source };
        let file = File::open(&path).map_err(io_err)?;
        let file_len = file.metadata().map_err(io_err)?.len();
        let mut r = Reader { inner: BufReader::with_capacity(1 << 16, file), pos: 0, len: file_len, path: &path };

        let magic: [u8; 4] = r.array("magic")?;
        if magic != GGUF_MAGIC {
            return Err(GgufError::BadMagic { path: path.clone(), found: magic });
        }
        let version = r.u32("version")?;
        if version != 2 && version != 3 {
            return Err(GgufError::UnsupportedVersion { path: path.clone(), version });
        }
        let tensor_count = r.u64("tensor count")?;
        let kv_count = r.u64("metadata count")?;

        let mut metadata = BTreeMap::new();
        for i in 0..kv_count {
            let at = r.pos;
            let key = r.string(&format!("key of metadata entry {i}"))?;
            let ty = r.u32(&format!("value type of metadata key {key:?}"))?;
            let value = r.value(ty, &key, 0)?;
            if metadata.insert(key.clone(), value).is_some() {
                return Err(r.invalid(at, format!("duplicate metadata key {key:?}")));
            }
        }

        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(v) => match v.as_u64() {
                Some(a) if a > 0 && a.is_power_of_two() => a,
                _ => {
                    return Err(GgufError::Invalid {
                        path: path.clone(),
                        offset: None,
                        what: format!("general.alignment must be a positive power of two, got {v:?}"),
                    })
                }
            },
        };

        // Each tensor info takes at least 8 + 4 + 4 + 8 bytes; reject absurd counts early.
        if tensor_count > file_len / 24 {
            return Err(r.invalid(r.pos, format!("tensor count {tensor_count} cannot fit in a {file_len}-byte file")));
        }
        let mut tensors = Vec::with_capacity(tensor_count as usize);
        let mut index = BTreeMap::new();
        for i in 0..tensor_count {
            let at = r.pos;
            let name = r.string(&format!("name of tensor {i}"))?;
            let n_dims = r.u32(&format!("rank of tensor {name:?}"))? as usize;
            if n_dims > MAX_DIMS {
                return Err(r.invalid(at, format!("tensor {name:?} has {n_dims} dims (max {MAX_DIMS})")));
            }
            let mut dims = Vec::with_capacity(n_dims);
            for _ in 0..n_dims {
                dims.push(r.u64(&format!("dims of tensor {name:?}"))?);
            }
            let ggml_type = GgmlType::from_id(r.u32(&format!("type of tensor {name:?}"))?);
            let offset = r.u64(&format!("offset of tensor {name:?}"))?;
            if !offset.is_multiple_of(alignment) {
                return Err(r.invalid(at, format!("tensor {name:?} offset {offset} is not a multiple of {alignment}")));
            }
            if index.insert(name.clone(), tensors.len()).is_some() {
                return Err(r.invalid(at, format!("duplicate tensor name {name:?}")));
            }
            tensors.push(TensorInfo { name, dims, ggml_type, offset });
        }

        let data_offset = r.pos.div_ceil(alignment) * alignment;
        for t in &tensors {
            if t.ggml_type.block_layout().is_none() {
                continue; // unknown layout: kept in the table, refused when read
            }
            let Some(n_bytes) = t.n_bytes() else {
                return Err(GgufError::Invalid {
                    path: path.clone(),
                    offset: None,
                    what: format!(
                        "tensor {:?} ({}, dims {:?}) has a row length that is not a multiple \
                         of the block size, or an overflowing size",
                        t.name, t.ggml_type, t.dims
                    ),
                });
            };
            let start = data_offset.checked_add(t.offset);
            let end = start.and_then(|s| s.checked_add(n_bytes));
            match end {
                Some(end) if end <= file_len && usize::try_from(n_bytes).is_ok() => {}
                _ => {
                    return Err(GgufError::Truncated {
                        path: path.clone(),
                        offset: start.unwrap_or(u64::MAX),
                        what: format!("data of tensor {:?} ({n_bytes} bytes)", t.name),
                    })
                }
            }
        }

        Ok(Gguf { version, metadata, tensors, alignment, data_offset, file_len, path, index })
    }

    /// Path the file was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Metadata value for `key`, if present.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    /// Integer metadata value as `u64`, or a [`GgufError::Metadata`] naming the key.
    pub fn require_u64(&self, key: &str) -> Result<u64, GgufError> {
        self.get(key).and_then(Value::as_u64).ok_or_else(|| self.meta_err(key, "a non-negative integer"))
    }

    /// Numeric metadata value as `f64`, or a [`GgufError::Metadata`] naming the key.
    pub fn require_f64(&self, key: &str) -> Result<f64, GgufError> {
        self.get(key).and_then(Value::as_f64).ok_or_else(|| self.meta_err(key, "a number"))
    }

    /// String metadata value, or a [`GgufError::Metadata`] naming the key.
    pub fn require_str(&self, key: &str) -> Result<&str, GgufError> {
        self.get(key).and_then(Value::as_str).ok_or_else(|| self.meta_err(key, "a string"))
    }

    /// `general.architecture` (e.g. `"llama"`), if present.
    pub fn architecture(&self) -> Option<&str> {
        self.get("general.architecture").and_then(Value::as_str)
    }

    /// Tensor info by name.
    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.index.get(name).map(|&i| &self.tensors[i])
    }

    /// Raw bytes of a tensor as stored (quantised blocks for quantised types).
    pub fn tensor_bytes(&self, name: &str) -> Result<Vec<u8>, GgufError> {
        let info = self.info_or_err(name)?;
        let n_bytes = info.n_bytes().ok_or_else(|| self.unsupported(info))?;
        let io_err = |source| GgufError::Io { path: self.path.clone(), source };
        let start = self.data_offset + info.offset; // no overflow: checked in open()
        let mut file = File::open(&self.path).map_err(io_err)?;
        file.seek(SeekFrom::Start(start)).map_err(io_err)?;
        let mut buf = vec![0u8; n_bytes as usize]; // fits usize: checked in open()
        file.read_exact(&mut buf).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                GgufError::Truncated {
                    path: self.path.clone(),
                    offset: start,
                    what: format!("data of tensor {name:?} (file shrank since open)"),
                }
            } else {
                io_err(e)
            }
        })?;
        Ok(buf)
    }

    /// Read and dequantise a tensor to `f32`. Returns the shape in PyTorch order (reversed
    /// GGUF dims) and the row-major values.
    ///
    /// Supported types: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K, Q8_K.
    pub fn tensor_f32(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>), GgufError> {
        let info = self.info_or_err(name)?;
        if !info.ggml_type.can_dequantize() {
            return Err(self.unsupported(info));
        }
        let bytes = self.tensor_bytes(name)?;
        let values = dequantize(info.ggml_type, &bytes).map_err(|what| GgufError::Invalid {
            path: self.path.clone(),
            offset: None,
            what: format!("tensor {name:?}: {what}"),
        })?;
        Ok((info.shape(), values))
    }

    fn info_or_err(&self, name: &str) -> Result<&TensorInfo, GgufError> {
        self.tensor_info(name)
            .ok_or_else(|| GgufError::NoSuchTensor { path: self.path.clone(), name: name.to_string() })
    }

    fn unsupported(&self, info: &TensorInfo) -> GgufError {
        GgufError::UnsupportedType { path: self.path.clone(), tensor: info.name.clone(), ggml_type: info.ggml_type }
    }

    fn meta_err(&self, key: &str, expected: &'static str) -> GgufError {
        GgufError::Metadata { path: self.path.clone(), key: key.to_string(), expected }
    }
}

/// Little-endian reader that tracks its offset and checks lengths against the file size.
struct Reader<'a, R> {
    inner: R,
    pos: u64,
    len: u64,
    path: &'a Path,
}

impl<R: Read> Reader<'_, R> {
    fn truncated(&self, offset: u64, what: &str) -> GgufError {
        GgufError::Truncated { path: self.path.to_path_buf(), offset, what: what.to_string() }
    }

    fn invalid(&self, offset: u64, what: String) -> GgufError {
        GgufError::Invalid { path: self.path.to_path_buf(), offset: Some(offset), what }
    }

    fn fill(&mut self, buf: &mut [u8], what: &str) -> Result<(), GgufError> {
        let at = self.pos;
        if (buf.len() as u64) > self.len.saturating_sub(at) {
            return Err(self.truncated(at, what));
        }
        self.inner.read_exact(buf).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                self.truncated(at, what)
            } else {
                GgufError::Io { path: self.path.to_path_buf(), source: e }
            }
        })?;
        self.pos += buf.len() as u64;
        Ok(())
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], GgufError> {
        let mut b = [0u8; N];
        self.fill(&mut b, what)?;
        Ok(b)
    }

    fn u32(&mut self, what: &str) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn string(&mut self, what: &str) -> Result<String, GgufError> {
        let at = self.pos;
        let n = self.u64(what)?;
        if n > self.len.saturating_sub(self.pos) {
            return Err(self.truncated(at, &format!("{what} (string of {n} bytes)")));
        }
        let mut buf = vec![0u8; n as usize];
        self.fill(&mut buf, what)?;
        String::from_utf8(buf).map_err(|e| self.invalid(at, format!("{what}: invalid UTF-8: {e}")))
    }

    /// Read one value of GGUF value type `ty` for metadata key `key`.
    fn value(&mut self, ty: u32, key: &str, depth: usize) -> Result<Value, GgufError> {
        let what = || format!("value of metadata key {key:?}");
        Ok(match ty {
            0 => Value::U8(u8::from_le_bytes(self.array(&what())?)),
            1 => Value::I8(i8::from_le_bytes(self.array(&what())?)),
            2 => Value::U16(u16::from_le_bytes(self.array(&what())?)),
            3 => Value::I16(i16::from_le_bytes(self.array(&what())?)),
            4 => Value::U32(u32::from_le_bytes(self.array(&what())?)),
            5 => Value::I32(i32::from_le_bytes(self.array(&what())?)),
            6 => Value::F32(f32::from_le_bytes(self.array(&what())?)),
            7 => {
                let at = self.pos;
                match self.array::<1>(&what())?[0] {
                    0 => Value::Bool(false),
                    1 => Value::Bool(true),
                    b => return Err(self.invalid(at, format!("{}: bool byte {b}", what()))),
                }
            }
            8 => Value::String(self.string(&what())?),
            9 => {
                let at = self.pos;
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(self.invalid(at, format!("{}: arrays nested too deep", what())));
                }
                let elem_ty = self.u32(&what())?;
                let n = self.u64(&what())?;
                // Every element takes at least one byte: a longer array cannot fit.
                if n > self.len.saturating_sub(self.pos) {
                    return Err(self.truncated(at, &format!("{} (array of {n} items)", what())));
                }
                let mut items = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    items.push(self.value(elem_ty, key, depth + 1)?);
                }
                Value::Array(items)
            }
            10 => Value::U64(u64::from_le_bytes(self.array(&what())?)),
            11 => Value::I64(i64::from_le_bytes(self.array(&what())?)),
            12 => Value::F64(f64::from_le_bytes(self.array(&what())?)),
            other => {
                let at = self.pos.saturating_sub(4);
                return Err(self.invalid(at, format!("metadata key {key:?} has unknown value type {other}")));
            }
        })
    }
}

/// Convert IEEE 754 half-precision bits to `f32` (exact; handles subnormals, inf and NaN).
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = (u32::from(h) & 0x8000) << 16;
    let exp = (u32::from(h) >> 10) & 0x1f;
    let mant = u32::from(h) & 0x3ff;
    let bits = match (exp, mant) {
        (0, 0) => sign,
        (0, m) => {
            // Subnormal: value = m * 2^-24; renormalise into an f32 normal.
            let shift = m.leading_zeros() - 21; // bring the top set bit to bit 10
            let m = (m << shift) & 0x3ff;
            let e = 127 - 15 + 1 - shift;
            sign | (e << 23) | (m << 13)
        }
        (0x1f, m) => sign | 0x7f80_0000 | (m << 13),
        (e, m) => sign | ((e + 127 - 15) << 23) | (m << 13),
    };
    f32::from_bits(bits)
}

/// Convert bfloat16 bits to `f32` (exact: bf16 is the top half of an f32).
pub fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits(u32::from(h) << 16)
}

fn rd_f16(b: &[u8], at: usize) -> f32 {
    f16_to_f32(u16::from_le_bytes([b[at], b[at + 1]]))
}

/// Dequantise raw tensor bytes of type `ty` to `f32` values (row-major, block by block).
///
/// The byte length must be a whole number of blocks. Errors (as a message) on unsupported
/// types or a ragged length.
pub fn dequantize(ty: GgmlType, bytes: &[u8]) -> Result<Vec<f32>, String> {
    let Some((block, size)) = ty.block_layout() else {
        return Err(format!("unsupported ggml type {ty}"));
    };
    let (block, size) = (block as usize, size as usize);
    if !bytes.len().is_multiple_of(size) {
        return Err(format!("{} bytes is not a whole number of {ty} blocks of {size} bytes", bytes.len()));
    }
    let mut out = Vec::with_capacity(bytes.len() / size * block);
    let blocks = bytes.chunks_exact(size);
    match ty {
        GgmlType::F32 => out.extend(blocks.map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
        GgmlType::F16 => out.extend(blocks.map(|b| f16_to_f32(u16::from_le_bytes([b[0], b[1]])))),
        GgmlType::BF16 => out.extend(blocks.map(|b| bf16_to_f32(u16::from_le_bytes([b[0], b[1]])))),
        // Q4_0: d:f16 | qs[16]. y[j] = d * (lo(qs[j]) - 8), y[j + 16] = d * (hi(qs[j]) - 8).
        GgmlType::Q4_0 => {
            for b in blocks {
                let d = rd_f16(b, 0);
                let qs = &b[2..18];
                out.extend(qs.iter().map(|&q| ((q & 0xf) as i32 - 8) as f32 * d));
                out.extend(qs.iter().map(|&q| ((q >> 4) as i32 - 8) as f32 * d));
            }
        }
        // Q4_1: d:f16 | m:f16 | qs[16]. y[j] = d * lo(qs[j]) + m, y[j + 16] = d * hi(qs[j]) + m.
        GgmlType::Q4_1 => {
            for b in blocks {
                let (d, m) = (rd_f16(b, 0), rd_f16(b, 2));
                let qs = &b[4..20];
                out.extend(qs.iter().map(|&q| (q & 0xf) as f32 * d + m));
                out.extend(qs.iter().map(|&q| (q >> 4) as f32 * d + m));
            }
        }
        // Q5_0: d:f16 | qh:u32 | qs[16]. Bit j of qh is bit 4 of element j, bit j + 16 of qh
        // is bit 4 of element j + 16; y = d * (q - 16).
        GgmlType::Q5_0 => {
            for b in blocks {
                let d = rd_f16(b, 0);
                let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
                let qs = &b[6..22];
                for (j, &q) in qs.iter().enumerate() {
                    let hi = (((qh >> j) & 1) << 4) as i32;
                    out.push((((q & 0xf) as i32 | hi) - 16) as f32 * d);
                }
                for (j, &q) in qs.iter().enumerate() {
                    let hi = (((qh >> (j + 16)) & 1) << 4) as i32;
                    out.push((((q >> 4) as i32 | hi) - 16) as f32 * d);
                }
            }
        }
        // Q5_1: d:f16 | m:f16 | qh:u32 | qs[16]. As Q5_0 without the -16, plus m.
        GgmlType::Q5_1 => {
            for b in blocks {
                let (d, m) = (rd_f16(b, 0), rd_f16(b, 2));
                let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
                let qs = &b[8..24];
                for (j, &q) in qs.iter().enumerate() {
                    let hi = ((qh >> j) & 1) << 4;
                    out.push((u32::from(q & 0xf) | hi) as f32 * d + m);
                }
                for (j, &q) in qs.iter().enumerate() {
                    let hi = ((qh >> (j + 16)) & 1) << 4;
                    out.push((u32::from(q >> 4) | hi) as f32 * d + m);
                }
            }
        }
        // Q8_0: d:f16 | qs[32]:i8. y = d * q.
        GgmlType::Q8_0 => {
            for b in blocks {
                let d = rd_f16(b, 0);
                out.extend(b[2..34].iter().map(|&q| f32::from(q as i8) * d));
            }
        }
        // Q8_K: d:f32 | qs[256]:i8 | bsums[16]:i16 (unused here). y = d * q.
        GgmlType::Q8_K => {
            for b in blocks {
                let d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                out.extend(b[4..260].iter().map(|&q| f32::from(q as i8) * d));
            }
        }
        // Q4_K: d:f16 | dmin:f16 | scales[12] | qs[128]. Eight sub-blocks of 32 with 6-bit
        // scale/min pairs; each 64-element chunk uses 32 bytes of qs: low nibbles for the
        // first sub-block, high nibbles for the second. y = d*sc*q - dmin*mn.
        GgmlType::Q4_K => {
            for b in blocks {
                let (d, dmin) = (rd_f16(b, 0), rd_f16(b, 2));
                let scales = &b[4..16];
                let qs = &b[16..144];
                for (c, q) in qs.chunks_exact(32).enumerate() {
                    let (sc1, m1) = scale_min_k4(2 * c, scales);
                    let (sc2, m2) = scale_min_k4(2 * c + 1, scales);
                    let (d1, m1) = (d * f32::from(sc1), dmin * f32::from(m1));
                    let (d2, m2) = (d * f32::from(sc2), dmin * f32::from(m2));
                    out.extend(q.iter().map(|&x| d1 * f32::from(x & 0xf) - m1));
                    out.extend(q.iter().map(|&x| d2 * f32::from(x >> 4) - m2));
                }
            }
        }
        // Q5_K: d:f16 | dmin:f16 | scales[12] | qh[32] | qs[128]. As Q4_K, with bit 4 of
        // element l of sub-block s taken from bit s of qh[l].
        GgmlType::Q5_K => {
            for b in blocks {
                let (d, dmin) = (rd_f16(b, 0), rd_f16(b, 2));
                let scales = &b[4..16];
                let qh = &b[16..48];
                let qs = &b[48..176];
                for (c, q) in qs.chunks_exact(32).enumerate() {
                    let (sc1, m1) = scale_min_k4(2 * c, scales);
                    let (sc2, m2) = scale_min_k4(2 * c + 1, scales);
                    let (d1, m1) = (d * f32::from(sc1), dmin * f32::from(m1));
                    let (d2, m2) = (d * f32::from(sc2), dmin * f32::from(m2));
                    let (u1, u2) = (1u8 << (2 * c), 1u8 << (2 * c + 1));
                    for (l, &x) in q.iter().enumerate() {
                        let hi = if qh[l] & u1 != 0 { 16 } else { 0 };
                        out.push(d1 * f32::from((x & 0xf) + hi) - m1);
                    }
                    for (l, &x) in q.iter().enumerate() {
                        let hi = if qh[l] & u2 != 0 { 16 } else { 0 };
                        out.push(d2 * f32::from((x >> 4) + hi) - m2);
                    }
                }
            }
        }
        // Q6_K: ql[128] | qh[64] | scales[16]:i8 | d:f16, as two halves of 128 elements using
        // ql[64], qh[32], sc[8] each. Element l + 32k (l < 32, k < 4) of a half has low 4 bits
        // from ql[l + 32(k % 2)] (low nibble for k < 2, high for k >= 2), high 2 bits from
        // qh[l] >> 2k, scale sc[l / 16 + 2k]; y = d * sc * (q - 32).
        GgmlType::Q6_K => {
            for b in blocks {
                let d = rd_f16(b, 208);
                for half in 0..2 {
                    let ql = &b[64 * half..64 * half + 64];
                    let qh = &b[128 + 32 * half..128 + 32 * half + 32];
                    let sc = &b[192 + 8 * half..192 + 8 * half + 8];
                    let mut y = [0f32; 128];
                    for l in 0..32 {
                        let is = l / 16;
                        let h = qh[l];
                        let q1 = ((ql[l] & 0xf) | ((h & 3) << 4)) as i32 - 32;
                        let q2 = ((ql[l + 32] & 0xf) | (((h >> 2) & 3) << 4)) as i32 - 32;
                        let q3 = ((ql[l] >> 4) | (((h >> 4) & 3) << 4)) as i32 - 32;
                        let q4 = ((ql[l + 32] >> 4) | (((h >> 6) & 3) << 4)) as i32 - 32;
                        let s = |k: usize| d * f32::from(sc[is + 2 * k] as i8);
                        y[l] = s(0) * q1 as f32;
                        y[l + 32] = s(1) * q2 as f32;
                        y[l + 64] = s(2) * q3 as f32;
                        y[l + 96] = s(3) * q4 as f32;
                    }
                    out.extend_from_slice(&y);
                }
            }
        }
        other => return Err(format!("cannot dequantise ggml type {other}")),
    }
    Ok(out)
}

/// 6-bit scale and min of sub-block `j` (0..8) from the 12-byte K-quant scales field
/// (ggml's `get_scale_min_k4`).
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 0xf) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    // ---------------------------------------------------------------- helpers

    fn f16_bytes(bits: u16) -> [u8; 2] {
        bits.to_le_bytes()
    }

    /// Write `bytes` to a fresh temp file and return its path.
    fn temp_file(bytes: &[u8]) -> PathBuf {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "trajflow_gguf_test_{}_{}.gguf",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// Temp file removed on drop.
    struct Tmp(PathBuf);

    impl Drop for Tmp {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    /// Open `bytes` as a GGUF file, keeping the file (for tensor reads) while `Tmp` lives.
    fn open_kept(bytes: &[u8]) -> (Tmp, Gguf) {
        let tmp = Tmp(temp_file(bytes));
        let g = Gguf::open(&tmp.0).unwrap();
        (tmp, g)
    }

    fn open_bytes(bytes: &[u8]) -> Result<Gguf, GgufError> {
        let tmp = Tmp(temp_file(bytes));
        Gguf::open(&tmp.0)
    }

    /// Minimal GGUF writer for synthetic test files.
    struct W(Vec<u8>);

    impl W {
        fn u32(&mut self, v: u32) -> &mut Self {
            self.0.extend_from_slice(&v.to_le_bytes());
            self
        }
        fn u64(&mut self, v: u64) -> &mut Self {
            self.0.extend_from_slice(&v.to_le_bytes());
            self
        }
        fn str(&mut self, s: &str) -> &mut Self {
            self.u64(s.len() as u64);
            self.0.extend_from_slice(s.as_bytes());
            self
        }
        fn bytes(&mut self, b: &[u8]) -> &mut Self {
            self.0.extend_from_slice(b);
            self
        }
        fn pad_to(&mut self, align: usize) -> &mut Self {
            while !self.0.len().is_multiple_of(align) {
                self.0.push(0);
            }
            self
        }
    }

    /// Synthetic file: every metadata value type, alignment 64, and five tensors.
    /// Returns the bytes and the absolute data-section offset.
    fn synthetic(version: u32) -> (Vec<u8>, usize) {
        let mut w = W(Vec::new());
        w.bytes(b"GGUF").u32(version).u64(5).u64(18);
        w.str("general.architecture").u32(8).str("llama");
        w.str("general.alignment").u32(4).u32(64);
        w.str("k.u8").u32(0).bytes(&[200]);
        w.str("k.i8").u32(1).bytes(&[(-5i8) as u8]);
        w.str("k.u16").u32(2).bytes(&60000u16.to_le_bytes());
        w.str("k.i16").u32(3).bytes(&(-300i16).to_le_bytes());
        w.str("k.u32").u32(4).u32(4_000_000_000);
        w.str("k.i32").u32(5).bytes(&(-70000i32).to_le_bytes());
        w.str("k.f32").u32(6).bytes(&1.5f32.to_le_bytes());
        w.str("k.bool").u32(7).bytes(&[1]);
        w.str("k.u64").u32(10).u64(u64::MAX);
        w.str("k.i64").u32(11).bytes(&(-9_000_000_000i64).to_le_bytes());
        w.str("k.f64").u32(12).bytes(&(-0.25f64).to_le_bytes());
        w.str("k.strs").u32(9).u32(8).u64(3).str("a").str("").str("Ġhé");
        w.str("k.i32s").u32(9).u32(5).u64(2);
        w.bytes(&(-1i32).to_le_bytes()).bytes(&7i32.to_le_bytes());
        w.str("k.nested").u32(9).u32(9).u64(2);
        w.u32(0).u64(2).bytes(&[1, 2]).u32(0).u64(0);
        w.str("k.empty").u32(9).u32(6).u64(0);
        w.str("k.utf8").u32(8).str("{% if x %}<|im_start|>{% endif %}");
        // Tensors: (name, dims, type id, offset relative to the data section).
        // f32 [3, 2] -> PyTorch [2, 3]: 24 bytes at 0.
        w.str("t.f32").u32(2).u64(3).u64(2).u32(0).u64(0);
        // q8_0 [32, 2] -> [2, 32]: 2 blocks * 34 = 68 bytes at 64.
        w.str("t.q8").u32(2).u64(32).u64(2).u32(8).u64(64);
        // f16 scalar-ish [1]: 2 bytes at 192.
        w.str("t.f16").u32(1).u64(1).u32(1).u64(192);
        // q2_k [256]: known layout (84 bytes) but no dequantiser, at 256.
        w.str("t.q2k").u32(1).u64(256).u32(10).u64(256);
        // unknown type id 99: kept in the table, unreadable; offset 384.
        w.str("t.unknown").u32(1).u64(4).u32(99).u64(384);
        w.pad_to(64);
        let data = w.0.len();
        for v in [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0] {
            w.bytes(&v.to_le_bytes());
        }
        w.pad_to(64);
        for blk in 0..2u8 {
            // d = 2.0 (f16 0x4000); q_i = i - 16 + blk => y = 2 * (i - 16 + blk).
            w.bytes(&f16_bytes(0x4000));
            for i in 0..32u8 {
                w.bytes(&[(i as i8 - 16 + blk as i8) as u8]);
            }
        }
        w.pad_to(64);
        while w.0.len() < data + 192 {
            w.0.push(0);
        }
        w.bytes(&f16_bytes(0xc100)); // -2.5
        while w.0.len() < data + 256 + 84 {
            w.0.push(0);
        }
        (w.0, data)
    }

    // ---------------------------------------------------------------- parsing

    #[test]
    fn parses_synthetic_v3_and_v2() {
        for version in [2, 3] {
            let (bytes, data) = synthetic(version);
            let (_tmp, g) = open_kept(&bytes);
            assert_eq!(g.version, version);
            assert_eq!(g.alignment, 64);
            assert_eq!(g.data_offset, data as u64);
            assert_eq!(g.data_offset % 64, 0);
            assert_eq!(g.architecture(), Some("llama"));
            let m = &g.metadata;
            assert_eq!(m["k.u8"], Value::U8(200));
            assert_eq!(m["k.i8"], Value::I8(-5));
            assert_eq!(m["k.u16"], Value::U16(60000));
            assert_eq!(m["k.i16"], Value::I16(-300));
            assert_eq!(m["k.u32"].as_u64(), Some(4_000_000_000));
            assert_eq!(m["k.i32"].as_i64(), Some(-70000));
            assert_eq!(m["k.i32"].as_u64(), None);
            assert_eq!(m["k.f32"].as_f64(), Some(1.5));
            assert_eq!(m["k.bool"].as_bool(), Some(true));
            assert_eq!(m["k.u64"].as_u64(), Some(u64::MAX));
            assert_eq!(m["k.u64"].as_i64(), None);
            assert_eq!(m["k.i64"], Value::I64(-9_000_000_000));
            assert_eq!(m["k.f64"].as_f64(), Some(-0.25));
            assert_eq!(m["k.strs"].as_str_array(), Some(vec!["a", "", "Ġhé"]));
            assert_eq!(m["k.i32s"].as_i64_array(), Some(vec![-1, 7]));
            assert_eq!(m["k.i32s"].as_str_array(), None);
            assert_eq!(
                m["k.nested"],
                Value::Array(vec![Value::Array(vec![Value::U8(1), Value::U8(2)]), Value::Array(vec![]),])
            );
            assert_eq!(m["k.empty"].as_array().map(<[Value]>::len), Some(0));
            assert_eq!(g.require_str("k.utf8").unwrap(), "{% if x %}<|im_start|>{% endif %}");
            assert_eq!(g.require_u64("general.alignment").unwrap(), 64);
            assert_eq!(g.require_f64("k.u8").unwrap(), 200.0);
            let e = g.require_u64("k.f32").unwrap_err().to_string();
            assert!(e.contains("k.f32") && e.contains("trajflow_gguf_test"), "{e}");

            assert_eq!(g.tensors.len(), 5);
            let t = g.tensor_info("t.f32").unwrap();
            assert_eq!((t.dims.clone(), t.shape()), (vec![3, 2], vec![2, 3]));
            assert_eq!(t.n_bytes(), Some(24));
            let (shape, v) = g.tensor_f32("t.f32").unwrap();
            assert_eq!(shape, vec![2, 3]);
            assert_eq!(v, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);

            let (shape, v) = g.tensor_f32("t.q8").unwrap();
            assert_eq!(shape, vec![2, 32]);
            // Row r, column i: 2 * (i - 16 + r).
            for r in 0..2 {
                for i in 0..32 {
                    assert_eq!(v[r * 32 + i], 2.0 * (i as f32 - 16.0 + r as f32));
                }
            }
            assert_eq!(g.tensor_bytes("t.q8").unwrap().len(), 68);
            assert_eq!(g.tensor_f32("t.f16").unwrap(), (vec![1], vec![-2.5]));

            let e = g.tensor_f32("t.q2k").unwrap_err();
            assert!(matches!(e, GgufError::UnsupportedType { ggml_type: GgmlType::Q2_K, .. }));
            assert!(e.to_string().contains("Q2_K"), "{e}");
            assert_eq!(g.tensor_bytes("t.q2k").unwrap().len(), 84);
            let e = g.tensor_f32("t.unknown").unwrap_err();
            assert!(matches!(e, GgufError::UnsupportedType { ggml_type: GgmlType::Other(99), .. }));
            assert!(g.tensor_bytes("t.unknown").is_err());
            let e = g.tensor_f32("nope").unwrap_err();
            assert!(matches!(e, GgufError::NoSuchTensor { .. }), "{e}");
        }
    }

    #[test]
    fn default_alignment_is_32() {
        let mut w = W(Vec::new());
        w.bytes(b"GGUF").u32(3).u64(1).u64(0);
        w.str("w").u32(1).u64(2).u32(0).u64(0);
        w.pad_to(32);
        let data = w.0.len();
        w.bytes(&7.0f32.to_le_bytes()).bytes(&(-1.0f32).to_le_bytes());
        let (_tmp, g) = open_kept(&w.0);
        assert_eq!((g.alignment, g.data_offset), (32, data as u64));
        assert_eq!(g.tensor_f32("w").unwrap(), (vec![2], vec![7.0, -1.0]));
    }

    #[test]
    fn bad_magic_and_versions() {
        let (mut bytes, _) = synthetic(3);
        bytes[..4].copy_from_slice(b"GGML");
        let e = open_bytes(&bytes).unwrap_err();
        assert!(matches!(e, GgufError::BadMagic { found, .. } if &found == b"GGML"));
        let msg = e.to_string();
        assert!(msg.contains("bad magic") && msg.contains("trajflow_gguf_test"), "{msg}");

        let (mut bytes, _) = synthetic(3);
        bytes[4..8].copy_from_slice(&1u32.to_le_bytes());
        let e = open_bytes(&bytes).unwrap_err();
        assert!(matches!(e, GgufError::UnsupportedVersion { version: 1, .. }));
        bytes[4..8].copy_from_slice(&3u32.to_be_bytes());
        let msg = open_bytes(&bytes).unwrap_err().to_string();
        assert!(msg.contains("big-endian"), "{msg}");

        let e = Gguf::open("/nonexistent/dir/model.gguf").unwrap_err();
        assert!(matches!(e, GgufError::Io { .. }));
        assert!(e.to_string().contains("/nonexistent/dir/model.gguf"));
    }

    #[test]
    fn every_truncation_is_an_error() {
        let (bytes, _) = synthetic(3);
        for cut in 0..bytes.len() {
            match open_bytes(&bytes[..cut]) {
                Err(GgufError::Truncated { .. }) => {}
                other => panic!("cut at {cut}: expected Truncated, got {other:?}"),
            }
        }
        let msg = open_bytes(&bytes[..30]).unwrap_err().to_string();
        assert!(msg.contains("truncated") && msg.contains("trajflow_gguf_test"), "{msg}");
    }

    #[test]
    fn corrupt_headers_are_errors_not_panics() {
        // Absurd string length: refused before allocating.
        let mut w = W(Vec::new());
        w.bytes(b"GGUF").u32(3).u64(0).u64(1).u64(u64::MAX - 3);
        assert!(matches!(open_bytes(&w.0), Err(GgufError::Truncated { .. })));
        // Absurd array length.
        let mut w = W(Vec::new());
        w.bytes(b"GGUF").u32(3).u64(0).u64(1);
        w.str("a").u32(9).u32(4).u64(1 << 60);
        assert!(matches!(open_bytes(&w.0), Err(GgufError::Truncated { .. })));
        // Absurd tensor count.
        let mut w = W(Vec::new());
        w.bytes(b"GGUF").u32(3).u64(u64::MAX).u64(0);
        assert!(matches!(open_bytes(&w.0), Err(GgufError::Invalid { .. })));
        // Unknown metadata value type.
        let mut w = W(Vec::new());
        w.bytes(b"GGUF").u32(3).u64(0).u64(1);
        w.str("weird").u32(13).u32(0);
        let e = open_bytes(&w.0).unwrap_err();
        assert!(e.to_string().contains("unknown value type 13"), "{e}");
        // Invalid UTF-8 in a key.
        let mut w = W(Vec::new());
        w.bytes(b"GGUF").u32(3).u64(0).u64(1);
        w.u64(2).bytes(&[0xff, 0xfe]).u32(0).bytes(&[0]);
        assert!(matches!(open_bytes(&w.0), Err(GgufError::Invalid { .. })));
        // Misaligned tensor offset.
        let mut w = W(Vec::new());
        w.bytes(b"GGUF").u32(3).u64(1).u64(0);
        w.str("w").u32(1).u64(1).u32(0).u64(4);
        w.pad_to(32).bytes(&[0; 64]);
        let e = open_bytes(&w.0).unwrap_err();
        assert!(e.to_string().contains("not a multiple of 32"), "{e}");
        // Quantised row not a multiple of the block size.
        let mut w = W(Vec::new());
        w.bytes(b"GGUF").u32(3).u64(1).u64(0);
        w.str("w").u32(2).u64(16).u64(2).u32(8).u64(0);
        w.pad_to(32).bytes(&[0; 64]);
        assert!(matches!(open_bytes(&w.0), Err(GgufError::Invalid { .. })));
        // Too many dims; bad alignment value; bad bool byte.
        let mut w = W(Vec::new());
        w.bytes(b"GGUF").u32(3).u64(1).u64(0);
        w.str("w").u32(5).bytes(&[1; 40]).u32(0).u64(0);
        assert!(matches!(open_bytes(&w.0), Err(GgufError::Invalid { .. })));
        let mut w = W(Vec::new());
        w.bytes(b"GGUF").u32(3).u64(0).u64(1);
        w.str("general.alignment").u32(4).u32(48);
        assert!(matches!(open_bytes(&w.0), Err(GgufError::Invalid { .. })));
        let mut w = W(Vec::new());
        w.bytes(b"GGUF").u32(3).u64(0).u64(1);
        w.str("b").u32(7).bytes(&[2]);
        assert!(matches!(open_bytes(&w.0), Err(GgufError::Invalid { .. })));
    }

    // ---------------------------------------------------------------- dequantisation

    #[test]
    fn golden_f32_f16_bf16() {
        let mut b = Vec::new();
        b.extend_from_slice(&1.5f32.to_le_bytes());
        b.extend_from_slice(&(-2.0f32).to_le_bytes());
        assert_eq!(dequantize(GgmlType::F32, &b).unwrap(), vec![1.5, -2.0]);

        // f16: 0x3c00 = 1.0; 0xc000 = -2.0; 0x3555 = (1 + 0x155/1024) * 2^-2 = 1365/4096;
        // 0x0001 = 2^-24 (smallest subnormal); 0x03ff = 1023 * 2^-24 (largest subnormal);
        // 0x7bff = 65504 (max); 0x8000 = -0.0; 0x7c00 = +inf; 0xfc00 = -inf; 0x7e00 = NaN.
        let h: Vec<u8> = [0x3c00u16, 0xc000, 0x3555, 0x0001, 0x03ff, 0x7bff, 0x8000, 0x7c00, 0xfc00, 0x7e00]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let v = dequantize(GgmlType::F16, &h).unwrap();
        assert_eq!(v[..6], [1.0, -2.0, 1365.0 / 4096.0, 2f32.powi(-24), 1023.0 * 2f32.powi(-24), 65504.0]);
        assert_eq!(v[6].to_bits(), (-0.0f32).to_bits());
        assert_eq!((v[7], v[8]), (f32::INFINITY, f32::NEG_INFINITY));
        assert!(v[9].is_nan());

        // bf16 is the top 16 bits of an f32: 0x3f80 = 1.0, 0xc040 = -3.0, 0x4049 = 3.140625.
        let h: Vec<u8> = [0x3f80u16, 0xc040, 0x4049].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(dequantize(GgmlType::BF16, &h).unwrap(), vec![1.0, -3.0, 3.140625]);
    }

    /// Nibble pattern used by the 4/5-bit tests: byte j has low nibble j, high nibble 15 - j.
    fn nibbles() -> Vec<u8> {
        (0..16u8).map(|j| j | ((15 - j) << 4)).collect()
    }

    #[test]
    fn golden_q4_0() {
        // d = 0.5 (0x3800). y[j] = 0.5 * (j - 8), y[j + 16] = 0.5 * ((15 - j) - 8) = 0.5 * (7 - j).
        let mut b = f16_bytes(0x3800).to_vec();
        b.extend(nibbles());
        let v = dequantize(GgmlType::Q4_0, &b).unwrap();
        for j in 0..16 {
            assert_eq!(v[j], 0.5 * (j as f32 - 8.0));
            assert_eq!(v[j + 16], 0.5 * (7.0 - j as f32));
        }
        assert_eq!((v[0], v[15], v[16], v[31]), (-4.0, 3.5, 3.5, -4.0));
    }

    #[test]
    fn golden_q4_1() {
        // d = 0.25 (0x3400), m = -1.0 (0xbc00). y[j] = 0.25 * j - 1, y[j + 16] = 0.25 * (15 - j) - 1.
        let mut b = f16_bytes(0x3400).to_vec();
        b.extend(f16_bytes(0xbc00));
        b.extend(nibbles());
        let v = dequantize(GgmlType::Q4_1, &b).unwrap();
        for j in 0..16 {
            assert_eq!(v[j], 0.25 * j as f32 - 1.0);
            assert_eq!(v[j + 16], 0.25 * (15 - j) as f32 - 1.0);
        }
        assert_eq!((v[0], v[15], v[16], v[31]), (-1.0, 2.75, 2.75, -1.0));
    }

    #[test]
    fn golden_q5_0() {
        // d = 1.0 (0x3c00), qh = 0xaaaaaaaa (bit i set for odd i), every qs byte 0x21 (lo 1, hi 2).
        // Element j < 16: q = 1 + 16 * (j odd) - 16 -> -15 (even j) or 1 (odd j).
        // Element j + 16: bit j + 16 is set iff j is odd -> q = 2 + 16 * (j odd) - 16 -> -14 or 2.
        let mut b = f16_bytes(0x3c00).to_vec();
        b.extend(0xaaaa_aaaau32.to_le_bytes());
        b.extend([0x21u8; 16]);
        let v = dequantize(GgmlType::Q5_0, &b).unwrap();
        for j in 0..16 {
            let odd = j % 2 == 1;
            assert_eq!(v[j], if odd { 1.0 } else { -15.0 });
            assert_eq!(v[j + 16], if odd { 2.0 } else { -14.0 });
        }
    }

    #[test]
    fn golden_q5_1() {
        // d = 0.5 (0x3800), m = 2.0 (0x4000), qh = 0xffff0000 (bit 4 set only for elements
        // 16..32), every qs byte 0x73 (lo 3, hi 7).
        // y[j] = 0.5 * 3 + 2 = 3.5; y[j + 16] = 0.5 * (7 + 16) + 2 = 13.5.
        let mut b = f16_bytes(0x3800).to_vec();
        b.extend(f16_bytes(0x4000));
        b.extend(0xffff_0000u32.to_le_bytes());
        b.extend([0x73u8; 16]);
        let v = dequantize(GgmlType::Q5_1, &b).unwrap();
        assert_eq!(v[..16], [3.5; 16]);
        assert_eq!(v[16..], [13.5; 16]);
    }

    #[test]
    fn golden_q8_0_and_q8_k() {
        // Q8_0: d = 0.125 (0x3000), q_i = i - 16 -> y_i = 0.125 * (i - 16): y_0 = -2, y_31 = 1.875.
        let mut b = f16_bytes(0x3000).to_vec();
        b.extend((0..32).map(|i: i32| (i - 16) as i8 as u8));
        let v = dequantize(GgmlType::Q8_0, &b).unwrap();
        for (i, y) in v.iter().enumerate() {
            assert_eq!(*y, 0.125 * (i as f32 - 16.0));
        }
        assert_eq!((v[0], v[31]), (-2.0, 1.875));

        // Q8_K: d = 0.5 (f32), q_i = i as i8 (0..127, then -128..-1), bsums ignored.
        // y_1 = 0.5, y_127 = 63.5, y_128 = -64, y_255 = -0.5.
        let mut b = 0.5f32.to_le_bytes().to_vec();
        b.extend((0..256).map(|i: u32| i as u8));
        b.extend([0xab; 32]);
        let v = dequantize(GgmlType::Q8_K, &b).unwrap();
        assert_eq!(v.len(), 256);
        assert_eq!((v[1], v[127], v[128], v[255]), (0.5, 63.5, -64.0, -0.5));
    }

    /// K-quant scales used by the Q4_K/Q5_K tests: sub-blocks 0..4 have (scale, min) =
    /// (1,1), (2,1), (3,1), (4,1); scales[0] and scales[4] also carry high bits 0b01 and 0b10,
    /// which become bits 4..6 of sub-block 4's scale and min. scales[8..12] = 0x25 gives
    /// sub-blocks 4..8 low nibbles scale 5, min 2. So sub 4 = (5 | 1 << 4, 2 | 2 << 4) =
    /// (21, 34) and subs 5..8 = (5, 2).
    fn k_scales() -> [u8; 12] {
        [1 | 0x40, 2, 3, 4, 1 | 0x80, 1, 1, 1, 0x25, 0x25, 0x25, 0x25]
    }

    #[test]
    fn scale_min_k4_unpacks_high_bits() {
        let s = k_scales();
        let got: Vec<(u8, u8)> = (0..8).map(|j| scale_min_k4(j, &s)).collect();
        let want = [(1, 1), (2, 1), (3, 1), (4, 1), (21, 34), (5, 2), (5, 2), (5, 2)];
        assert_eq!(got, want);
    }

    #[test]
    fn golden_q4_k() {
        // d = 1.0, dmin = 0.5, every qs byte 0x93 (lo 3, hi 9). 64-element chunk c uses low
        // nibbles for sub-block 2c and high nibbles for 2c + 1; y = d*sc*q - dmin*min:
        // sub0 1*3 - 0.5 = 2.5   sub1 2*9 - 0.5 = 17.5   sub2 3*3 - 0.5 = 8.5  sub3 4*9 - 0.5 = 35.5
        // sub4 21*3 - 17 = 46    sub5 5*9 - 1 = 44       sub6 5*3 - 1 = 14     sub7 5*9 - 1 = 44
        let mut b = f16_bytes(0x3c00).to_vec();
        b.extend(f16_bytes(0x3800));
        b.extend(k_scales());
        b.extend([0x93u8; 128]);
        let v = dequantize(GgmlType::Q4_K, &b).unwrap();
        let want = [2.5, 17.5, 8.5, 35.5, 46.0, 44.0, 14.0, 44.0];
        for (s, w) in want.iter().enumerate() {
            assert!(v[s * 32..s * 32 + 32].iter().all(|y| y == w), "sub-block {s}");
        }
    }

    #[test]
    fn golden_q5_k() {
        // As golden_q4_k plus qh[l] = 0b101 for all l: bit s of qh[l] adds 16 to element l of
        // sub-block s, so sub0 = 1*(3+16) - 0.5 = 18.5 and sub2 = 3*(3+16) - 0.5 = 56.5.
        let mut b = f16_bytes(0x3c00).to_vec();
        b.extend(f16_bytes(0x3800));
        b.extend(k_scales());
        b.extend([0b101u8; 32]);
        b.extend([0x93u8; 128]);
        let v = dequantize(GgmlType::Q5_K, &b).unwrap();
        let want = [18.5, 17.5, 56.5, 35.5, 46.0, 44.0, 14.0, 44.0];
        for (s, w) in want.iter().enumerate() {
            assert!(v[s * 32..s * 32 + 32].iter().all(|y| y == w), "sub-block {s}");
        }
    }

    #[test]
    fn golden_q6_k() {
        // ql bytes 0x21 (lo 1, hi 2), qh bytes 0xe4 = 0b11_10_01_00 (2-bit fields 0,1,2,3),
        // scales sc[i] = i + 1 except sc[3] = -2, d = 0.5. Element l + 32k of a half:
        // k=0: q = 1 | 0<<4 = 1 - 32 = -31   k=1: q = 1 | 1<<4 = 17 - 32 = -15
        // k=2: q = 2 | 2<<4 = 34 - 32 = 2    k=3: q = 2 | 3<<4 = 50 - 32 = 18
        // scale index 8h + l/16 + 2k; y = 0.5 * sc * q. Half 0:
        // k=0: 0.5*1*-31 = -15.5 | 0.5*2*-31 = -31    k=1: 0.5*3*-15 = -22.5 | 0.5*-2*-15 = 15
        // k=2: 0.5*5*2 = 5       | 0.5*6*2 = 6        k=3: 0.5*7*18 = 63     | 0.5*8*18 = 72
        // Half 1: k=0: 9 -> -139.5 | 10 -> -155       k=1: 11 -> -82.5 | 12 -> -90
        //         k=2: 13 -> 13    | 14 -> 14         k=3: 15 -> 135   | 16 -> 144
        let mut b = vec![0x21u8; 128];
        b.extend([0xe4u8; 64]);
        b.extend((1..=16i8).map(|s| if s == 4 { (-2i8) as u8 } else { s as u8 }));
        b.extend(f16_bytes(0x3800));
        assert_eq!(b.len(), 210);
        let v = dequantize(GgmlType::Q6_K, &b).unwrap();
        let want = [
            [-15.5, -31.0, -22.5, 15.0, 5.0, 6.0, 63.0, 72.0],
            [-139.5, -155.0, -82.5, -90.0, 13.0, 14.0, 135.0, 144.0],
        ];
        for h in 0..2 {
            for k in 0..4 {
                for l in 0..32 {
                    let w = want[h][2 * k + l / 16];
                    assert_eq!(v[128 * h + 32 * k + l], w, "half {h} k {k} l {l}");
                }
            }
        }
    }

    /// Pseudo-random blocks (64-bit LCG, top byte of each step; f16 scale fields with bit 14
    /// cleared so they stay finite) checked against checksums from llama.cpp's Python
    /// `gguf.quants.dequantize` (gguf 0.19.0): (type, n values, sum, sum of y_i * (i % 7 + 1)).
    /// A separate run over 64 random blocks per type matched that reference bit for bit.
    #[test]
    fn lcg_blocks_match_python_gguf() {
        let cases: [(GgmlType, usize, f64, f64); 10] = [
            (GgmlType::F16, 32, -0.926706850528717, 0.02253824472427368),
            (GgmlType::BF16, 32, 1.6300153531936636, 9.747513652700606),
            (GgmlType::Q4_0, 64, 29.5191650390625, 143.153076171875),
            (GgmlType::Q4_1, 64, 65.58649444580078, 261.27681732177734),
            (GgmlType::Q5_0, 64, -0.015098810195922852, -0.0630791187286377),
            (GgmlType::Q5_1, 64, -120.86064767837524, -446.67651480436325),
            (GgmlType::Q8_0, 64, -7.112754821777344, -28.305198669433594),
            (GgmlType::Q4_K, 512, -187896.74816131592, -732962.1275863647),
            (GgmlType::Q5_K, 512, 13393.076206088066, 52345.94600152969),
            (GgmlType::Q6_K, 512, 132.08720815181732, 448.606832921505),
        ];
        for (ty, n, sum, wsum) in cases {
            let (_, size) = ty.block_layout().unwrap();
            let size = size as usize;
            let f16_fields: &[usize] = match ty {
                GgmlType::F16 | GgmlType::BF16 => &[0],
                GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => &[0],
                GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4_K | GgmlType::Q5_K => &[0, 2],
                GgmlType::Q6_K => &[208],
                _ => unreachable!(),
            };
            let len = if size > 2 { 2 * size } else { 64 };
            let mut s = u64::from(ty.id());
            let mut b: Vec<u8> = (0..len)
                .map(|_| {
                    s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    (s >> 56) as u8
                })
                .collect();
            for blk in b.chunks_exact_mut(size) {
                for &o in f16_fields {
                    blk[o + 1] &= 0xbf;
                }
            }
            let v = dequantize(ty, &b).unwrap();
            assert_eq!(v.len(), n, "{ty}");
            let (mut s1, mut s2) = (0f64, 0f64);
            for (i, &y) in v.iter().enumerate() {
                s1 += f64::from(y);
                s2 += f64::from(y) * ((i % 7) + 1) as f64;
            }
            assert_eq!((s1, s2), (sum, wsum), "{ty}");
        }
    }

    #[test]
    fn dequantize_rejects_ragged_and_unsupported() {
        assert!(dequantize(GgmlType::Q4_0, &[0; 17]).is_err());
        assert!(dequantize(GgmlType::Q2_K, &[0; 84]).is_err());
        assert!(dequantize(GgmlType::Other(99), &[0; 4]).is_err());
        assert_eq!(dequantize(GgmlType::Q8_0, &[]).unwrap(), Vec::<f32>::new());
    }

    #[test]
    fn ggml_type_ids_roundtrip() {
        for id in 0..40 {
            assert_eq!(GgmlType::from_id(id).id(), id);
        }
    }

    // ---------------------------------------------------------------- real model

    /// Opens the real SmolLM2-135M-Instruct Q4_1 file named by `$TRAJFLOW_SMOLLM2_GGUF` and
    /// checks metadata and dequantised tensors against tests/fixtures/smollm2_gguf_probe.json
    /// (written by benches/gguf_probe.py with llama.cpp's Python `gguf` package).
    #[test]
    fn smollm2_real_file() {
        let Some(path) = std::env::var_os("TRAJFLOW_SMOLLM2_GGUF") else {
            eprintln!(
                "skipping smollm2_real_file: set TRAJFLOW_SMOLLM2_GGUF to \
                 SmolLM2-135M-Instruct.Q4_1.gguf to run it"
            );
            return;
        };
        let g = Gguf::open(&path).unwrap();
        assert_eq!(g.version, 3);
        assert_eq!(g.architecture(), Some("llama"));
        assert_eq!(g.require_u64("llama.block_count").unwrap(), 30);
        assert_eq!(g.require_u64("llama.embedding_length").unwrap(), 576);
        assert_eq!(g.require_u64("llama.attention.head_count").unwrap(), 9);
        assert_eq!(g.require_u64("llama.attention.head_count_kv").unwrap(), 3);
        assert_eq!(g.require_u64("llama.rope.dimension_count").unwrap(), 64);
        assert_eq!(g.require_f64("llama.rope.freq_base").unwrap(), 100000.0);
        assert_eq!(g.require_str("tokenizer.ggml.model").unwrap(), "gpt2");
        let tokens = g.get("tokenizer.ggml.tokens").and_then(Value::as_str_array).unwrap();
        assert_eq!(tokens.len(), 49152);
        assert_eq!(tokens[..3], ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]);
        let merges = g.get("tokenizer.ggml.merges").and_then(Value::as_str_array).unwrap();
        assert_eq!((merges.len(), merges[0]), (48900, "Ġ t"));
        assert!(g.tensor_info("output.weight").is_none(), "SmolLM2 ties embeddings");

        let probe_path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/smollm2_gguf_probe.json");
        let probe: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(probe_path).unwrap()).unwrap();
        assert_eq!(probe["tensor_count"].as_u64(), Some(g.tensors.len() as u64));
        assert_eq!(probe["data_offset"].as_u64(), Some(g.data_offset));
        let f64s =
            |v: &serde_json::Value| -> Vec<f64> { v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect() };
        let probes = probe["tensors"].as_array().unwrap();
        assert!(probes.len() >= 3);
        for p in probes {
            let name = p["name"].as_str().unwrap();
            let info = g.tensor_info(name).unwrap();
            assert_eq!(info.ggml_type.to_string(), p["ggml_type"].as_str().unwrap(), "{name}");
            let (shape, v) = g.tensor_f32(name).unwrap();
            let want_shape: Vec<usize> = f64s(&p["shape"]).iter().map(|&d| d as usize).collect();
            assert_eq!(shape, want_shape, "{name}");
            assert_eq!(v.len(), shape.iter().product::<usize>());
            // Same f32 arithmetic as the reference: the sampled values match bit for bit
            // (compared as f32, since serde_json's default float parsing may be 1 ulp off in
            // f64).
            let row = v.len() / shape[0];
            let row1 = if shape.len() > 1 { &v[row..row + 8] } else { &v[..8] };
            for (got, want) in [(&v[..8], f64s(&p["first8"])), (row1, f64s(&p["row1_first8"]))] {
                let want: Vec<f32> = want.iter().map(|&x| x as f32).collect();
                assert_eq!(got, &want[..], "{name}");
            }
            assert_eq!(f64::from(v[v.len() - 1]), p["last"].as_f64().unwrap(), "{name}");
            let sum: f64 = v.iter().map(|&x| f64::from(x)).sum();
            let abs_sum: f64 = v.iter().map(|&x| f64::from(x).abs()).sum();
            let (want_sum, want_abs) = (p["sum"].as_f64().unwrap(), p["abs_sum"].as_f64().unwrap());
            // Summation order differs (numpy uses pairwise sums): compare with a tolerance
            // scaled by the sum of magnitudes.
            assert!((sum - want_sum).abs() <= 1e-9 * want_abs, "{name}: {sum} vs {want_sum}");
            assert!((abs_sum - want_abs).abs() <= 1e-9 * want_abs, "{name}");
        }
    }
}
