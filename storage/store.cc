#include "storage/store.h"

#include <rocksdb/db.h>
#include <rocksdb/filter_policy.h>
#include <rocksdb/options.h>
#include <rocksdb/slice.h>
#include <rocksdb/table.h>
#include <rocksdb/utilities/checkpoint.h>
#include <rocksdb/write_batch.h>

#include "common/mutex.h"

namespace mnemo::storage {
namespace {

constexpr const char* kCfNames[] = {"meta", "entries", "codes", "index", "kv"};
constexpr size_t kNumCfs = 5;

// What a store that stopped taking writes needs.
constexpr const char* kReopen =
    "reopen it (restart mnemod) once the cause, such as a full disk, is fixed";

rocksdb::Slice ToSlice(std::string_view s) { return rocksdb::Slice(s.data(), s.size()); }

Status FromRocks(const rocksdb::Status& s, std::string_view what) {
  if (s.ok()) return Status::OK();
  std::string msg = std::string(what) + ": " + s.ToString();
  if (s.IsCorruption()) return Status::Corruption(msg);
  if (s.IsNoSpace()) return Status::ResourceExhausted(msg);
  if (s.IsIOError()) return Status::IOError(msg);
  if (s.IsInvalidArgument()) return Status::InvalidArgument(msg);
  return Status::Internal(msg);
}

rocksdb::ColumnFamilyOptions CfOptions(Cf cf) {
  rocksdb::ColumnFamilyOptions o;
  // Vectors and quantizer codes are high-entropy: compressing them costs CPU
  // for almost no space. Metadata and snapshots compress well.
  bool dense = cf == Cf::kEntries || cf == Cf::kCodes;
  o.compression = dense ? rocksdb::kNoCompression : rocksdb::kLZ4Compression;
  o.write_buffer_size = dense ? 128 << 20 : 16 << 20;
  if (cf == Cf::kIndex) o.enable_blob_files = true;  // multi-MB snapshot chunks
  // kv holds segment heads and references into the value log
  // (storage/value_log.h), where the layers themselves are: small values.
  rocksdb::BlockBasedTableOptions t;
  t.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
  o.table_factory.reset(rocksdb::NewBlockBasedTableFactory(t));
  return o;
}

}  // namespace

struct Store::Impl {
  std::unique_ptr<rocksdb::DB> db;
  std::vector<rocksdb::ColumnFamilyHandle*> handles;  // indexed by Cf
  rocksdb::WriteOptions write_options;
  mutable Mutex error_mu;
  Status write_error GUARDED_BY(error_mu);

  rocksdb::ColumnFamilyHandle* handle(Cf cf) const { return handles[size_t(cf)]; }

  ~Impl() {
    for (auto* h : handles) {
      if (h != nullptr) db->DestroyColumnFamilyHandle(h);
    }
    if (db) db->Close();
  }
};

struct WriteBatch::Rep {
  const std::vector<rocksdb::ColumnFamilyHandle*>* handles;
  rocksdb::WriteBatch batch;
  rocksdb::ColumnFamilyHandle* handle(Cf cf) const { return (*handles)[size_t(cf)]; }
};

WriteBatch::WriteBatch(const Store& store) : rep_(std::make_unique<Rep>()) {
  rep_->handles = &store.impl_->handles;
}
WriteBatch::~WriteBatch() = default;
WriteBatch::WriteBatch(WriteBatch&&) noexcept = default;
WriteBatch& WriteBatch::operator=(WriteBatch&&) noexcept = default;

// rocksdb::WriteBatch only fails these on sizes above 4 GiB, which the
// engine's batch limits rule out.
void WriteBatch::Put(Cf cf, std::string_view key, std::string_view value) {
  (void)rep_->batch.Put(rep_->handle(cf), ToSlice(key), ToSlice(value));
}
void WriteBatch::Delete(Cf cf, std::string_view key) {
  (void)rep_->batch.Delete(rep_->handle(cf), ToSlice(key));
}
void WriteBatch::DeleteRange(Cf cf, std::string_view begin, std::string_view end) {
  (void)rep_->batch.DeleteRange(rep_->handle(cf), ToSlice(begin), ToSlice(end));
}
size_t WriteBatch::Count() const { return rep_->batch.Count(); }
size_t WriteBatch::ByteSize() const { return rep_->batch.GetDataSize(); }

Store::Store(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Store::~Store() = default;

Result<std::unique_ptr<Store>> Store::Open(const std::string& dir,
                                           const StoreOptions& options) {
  rocksdb::DBOptions db_options;
  db_options.create_if_missing = options.create_if_missing;
  db_options.create_missing_column_families = true;
  db_options.max_background_jobs = 2;
  db_options.bytes_per_sync = 1 << 20;
  if (options.env != nullptr) db_options.env = options.env;

  std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
  descriptors.emplace_back(rocksdb::kDefaultColumnFamilyName, rocksdb::ColumnFamilyOptions());
  for (size_t i = 0; i < kNumCfs; ++i) {
    descriptors.emplace_back(kCfNames[i], CfOptions(Cf(i)));
  }
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* raw = nullptr;
  rocksdb::Status s = rocksdb::DB::Open(db_options, dir, descriptors, &handles, &raw);
  if (!s.ok()) return FromRocks(s, "cannot open store in '" + dir + "'");

  auto impl = std::make_unique<Impl>();
  impl->db.reset(raw);
  // handles[0] is the default family, which mnemo does not use.
  raw->DestroyColumnFamilyHandle(handles[0]);
  impl->handles.assign(handles.begin() + 1, handles.end());
  impl->write_options.sync = options.sync_writes;
  return std::unique_ptr<Store>(new Store(std::move(impl)));
}

Status Store::Write(WriteBatch* batch) {
  {
    MutexLock lock(&impl_->error_mu);
    if (!impl_->write_error.ok()) {
      return Status::FailedPrecondition("store refuses writes after an earlier failure (" +
                                        impl_->write_error.ToString() + "); " + kReopen);
    }
  }
  if (batch->rep_->handles != &impl_->handles) {
    return Status::Internal("write batch was made for another store");
  }
  rocksdb::Status s = impl_->db->Write(impl_->write_options, &batch->rep_->batch);
  if (!s.ok()) {
    Status cause = FromRocks(s, "write failed");
    {
      MutexLock lock(&impl_->error_mu);
      if (impl_->write_error.ok()) impl_->write_error = cause;
    }
    // Not worth retrying: every later write is refused until a reopen.
    return Status::FailedPrecondition(cause.ToString() + "; the store takes no more writes: " +
                                      kReopen);
  }
  return Status::OK();
}

Status Store::write_error() const {
  MutexLock lock(&impl_->error_mu);
  return impl_->write_error;
}

Result<std::optional<std::string>> Store::Get(Cf cf, std::string_view key) const {
  std::string value;
  rocksdb::Status s = impl_->db->Get(rocksdb::ReadOptions(), impl_->handle(cf), ToSlice(key), &value);
  if (s.IsNotFound()) return std::optional<std::string>();
  if (!s.ok()) return FromRocks(s, "read failed");
  return std::optional<std::string>(std::move(value));
}

Result<std::vector<std::optional<std::string>>> Store::MultiGet(
    Cf cf, const std::vector<std::string>& keys) const {
  std::vector<rocksdb::Slice> slices;
  slices.reserve(keys.size());
  for (const auto& k : keys) slices.push_back(ToSlice(k));
  std::vector<rocksdb::PinnableSlice> values(keys.size());
  std::vector<rocksdb::Status> statuses(keys.size());
  impl_->db->MultiGet(rocksdb::ReadOptions(), impl_->handle(cf), keys.size(),
                      slices.data(), values.data(), statuses.data());
  std::vector<std::optional<std::string>> out(keys.size());
  for (size_t i = 0; i < keys.size(); ++i) {
    if (statuses[i].IsNotFound()) continue;
    if (!statuses[i].ok()) return FromRocks(statuses[i], "read failed");
    out[i] = values[i].ToString();
  }
  return out;
}

namespace {

class RangeIterator final : public Store::Iterator {
 public:
  RangeIterator(rocksdb::DB* db, rocksdb::ColumnFamilyHandle* cf, std::string_view begin,
                std::string_view end)
      : end_(end), upper_(end_) {
    rocksdb::ReadOptions ro;
    ro.iterate_upper_bound = &upper_;
    ro.fill_cache = false;  // recovery scans must not evict the hot set
    it_.reset(db->NewIterator(ro, cf));
    it_->Seek(ToSlice(begin));
  }
  bool Valid() const override { return it_->Valid(); }
  void Next() override { it_->Next(); }
  std::string_view key() const override { return {it_->key().data(), it_->key().size()}; }
  std::string_view value() const override { return {it_->value().data(), it_->value().size()}; }
  Status status() const override { return FromRocks(it_->status(), "scan failed"); }

 private:
  std::string end_;
  rocksdb::Slice upper_;  // points into end_; must outlive it_
  std::unique_ptr<rocksdb::Iterator> it_;
};

}  // namespace

std::unique_ptr<Store::Iterator> Store::NewIterator(Cf cf, std::string_view begin,
                                                    std::string_view end) const {
  return std::make_unique<RangeIterator>(impl_->db.get(), impl_->handle(cf), begin, end);
}

Status Store::Scan(Cf cf, std::string_view begin, std::string_view end,
                   const ScanFn& fn) const {
  auto it = NewIterator(cf, begin, end);
  for (; it->Valid(); it->Next()) {
    if (!fn(it->key(), it->value())) break;
  }
  return it->status();
}

uint64_t Store::ApproximateBytes(Cf cf, std::string_view begin, std::string_view end) const {
  rocksdb::Range range(ToSlice(begin), ToSlice(end));
  uint64_t size = 0;
  rocksdb::SizeApproximationOptions o;
  o.include_memtables = true;
  o.include_files = true;
  impl_->db->GetApproximateSizes(o, impl_->handle(cf), &range, 1, &size);
  return size;
}

Status Store::Flush() {
  rocksdb::FlushOptions fo;
  fo.wait = true;
  rocksdb::Status s = impl_->db->Flush(fo, impl_->handles);
  return FromRocks(s, "flush failed");
}

Status Store::Checkpoint(const std::string& dir) {
  rocksdb::Checkpoint* raw = nullptr;
  rocksdb::Status s = rocksdb::Checkpoint::Create(impl_->db.get(), &raw);
  if (!s.ok()) return FromRocks(s, "cannot start checkpoint");
  std::unique_ptr<rocksdb::Checkpoint> cp(raw);
  return FromRocks(cp->CreateCheckpoint(dir), "checkpoint to '" + dir + "' failed");
}

}  // namespace mnemo::storage
