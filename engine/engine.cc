#include "engine/engine.h"

#include <chrono>
#include <filesystem>

#include <rocksdb/env.h>
#include <rocksdb/file_system.h>

#include "index/vector_index.h"
#include "storage/keys.h"

namespace mnemo::engine {

using storage::Cf;

namespace {

// `what`: "collection" or "KV space", for the message.
Status ValidateName(std::string_view name, const std::string& what) {
  if (name.empty() || name.size() > 128) {
    return Status::InvalidArgument(what + " name must have 1..128 characters");
  }
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-' || c == '.';
    if (!ok) {
      return Status::InvalidArgument(what + " name '" + std::string(name) +
                                     "' may only contain letters, digits, '_', '-' and '.'");
    }
  }
  return Status::OK();
}

Result<EvictPolicy> ParseEvict(std::string_view s) {
  if (s.empty() || s == "none") return EvictPolicy::kNone;
  if (s == "fifo") return EvictPolicy::kFifo;
  if (s == "lru") return EvictPolicy::kLru;
  return Status::InvalidArgument("unknown eviction policy '" + std::string(s) +
                                 "' (expected fifo or lru)");
}

// Reads the id counter at `next_key` (if any) and decodes every record
// stored under `prefix` in the meta column family.
template <typename Record>
Status LoadRecords(const storage::Store& store, std::string_view next_key, std::string_view prefix,
                   uint32_t* next_id, std::vector<Record>* records) {
  MNEMO_ASSIGN_OR_RETURN(auto next, store.Get(Cf::kMeta, next_key));
  if (next && next->size() == 4) *next_id = storage::DecodeFixed32(next->data());
  Status decode = Status::OK();
  MNEMO_RETURN_IF_ERROR(store.Scan(Cf::kMeta, prefix, storage::PrefixEnd(prefix), [&](std::string_view, std::string_view v) {
    auto r = Record::Decode(v);
    if (!r.ok()) { decode = r.status(); return false; }
    records->push_back(std::move(r).value());
    return true;
  }));
  return decode;
}

// Writes a new record under `key` with id *next_id, and the counter past it.
Status WriteNewRecord(storage::Store* store, const std::string& key, const std::string& value,
                      std::string_view next_key, uint32_t* next_id) {
  storage::WriteBatch batch(*store);
  batch.Put(Cf::kMeta, key, value);
  std::string next;
  storage::PutFixed32(&next, *next_id + 1);
  batch.Put(Cf::kMeta, next_key, next);
  MNEMO_RETURN_IF_ERROR(store->Write(&batch));
  ++*next_id;
  return Status::OK();
}

int64_t WallClockMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

EngineOptions WithClock(EngineOptions o) {
  if (!o.now_ms) o.now_ms = WallClockMs;
  return o;
}

}  // namespace

Engine::Engine(EngineOptions options, std::unique_ptr<storage::Store> store,
               std::unique_ptr<storage::ValueLog> values)
    : options_(WithClock(std::move(options))), store_(std::move(store)), value_log_(std::move(values)) {}

Engine::~Engine() { (void)Close(); }

Result<std::unique_ptr<Engine>> Engine::Open(const EngineOptions& options) {
  if (options.data_dir.empty()) return Status::InvalidArgument("no data directory given");
  storage::StoreOptions so;
  so.sync_writes = options.sync_writes;
  so.env = options.env;
  MNEMO_ASSIGN_OR_RETURN(auto store, storage::Store::Open(options.data_dir, so));
  storage::ValueLogOptions vo;
  vo.sync_writes = options.sync_writes;
  if (options.env != nullptr) vo.fs = options.env->GetFileSystem().get();
  MNEMO_ASSIGN_OR_RETURN(auto values,
                         storage::ValueLog::Open(options.data_dir + "/" + kValueLogDir, vo));
  std::unique_ptr<Engine> engine(new Engine(options, std::move(store), std::move(values)));
  MNEMO_RETURN_IF_ERROR(engine->LoadCollections());
  MNEMO_RETURN_IF_ERROR(engine->LoadKvSpaces());
  MNEMO_RETURN_IF_ERROR(engine->value_log_->FinishRecovery());
  return engine;
}

Status Engine::LoadCollections() {
  WriterLock lock(&mu_);  // uncontended: the engine is not out yet
  std::vector<CollectionRecord> records;
  MNEMO_RETURN_IF_ERROR(LoadRecords(*store_, storage::kNextCollectionIdKey,
                                    storage::kCollectionMetaPrefix, &next_collection_id_, &records));
  for (auto& r : records) {
    std::string name = r.name;
    auto c = std::make_shared<Collection>(store_.get(), &options_, std::move(r));
    Status st = c->Load();
    if (!st.ok()) {
      return Status(st.code(), "cannot load collection '" + name + "': " + st.message());
    }
    collections_.emplace(name, std::move(c));
  }
  return Status::OK();
}

Result<std::shared_ptr<Collection>> Engine::CreateCollection(const CollectionConfig& config) {
  MNEMO_RETURN_IF_ERROR(ValidateName(config.name, "collection"));
  MNEMO_ASSIGN_OR_RETURN(index::Metric metric, index::ParseMetric(config.metric));
  MNEMO_ASSIGN_OR_RETURN(EvictPolicy evict, ParseEvict(config.evict));
  if ((config.capacity == 0) != (evict == EvictPolicy::kNone)) {
    return Status::InvalidArgument("capacity and eviction policy go together");
  }
  if (config.capacity != 0) {
    return Status::FailedPrecondition("capacity with eviction is not supported yet");
  }
  CollectionRecord record;
  record.name = config.name;
  record.spec = {config.dim, metric, config.index.empty() ? "Flat" : config.index,
                 config.ef_construction};
  record.capacity = config.capacity;
  record.evict = evict;
  // Validates the factory string and tells how much data training needs.
  MNEMO_ASSIGN_OR_RETURN(auto probe, index::VectorIndex::Create(record.spec));
  record.train_size = probe->is_trained() ? 0
                      : config.train_size != 0 ? config.train_size
                                               : probe->min_training_vectors();
  record.created_unix = uint64_t(std::chrono::duration_cast<std::chrono::seconds>(
                                     std::chrono::system_clock::now().time_since_epoch())
                                     .count());

  WriterLock lock(&mu_);
  if (closed_) return Status::FailedPrecondition("engine is closed");
  if (collections_.count(config.name) != 0) {
    return Status::AlreadyExists("collection '" + config.name + "' already exists");
  }
  record.id = next_collection_id_;
  MNEMO_RETURN_IF_ERROR(WriteNewRecord(store_.get(), storage::CollectionMetaKey(record.name),
                                       record.Encode(), storage::kNextCollectionIdKey,
                                       &next_collection_id_));
  auto c = std::make_shared<Collection>(store_.get(), &options_, std::move(record));
  MNEMO_RETURN_IF_ERROR(c->Load());  // an empty index of the right kind
  collections_.emplace(config.name, c);
  return c;
}

Status Engine::LoadKvSpaces() {
  WriterLock lock(&mu_);  // uncontended: the engine is not out yet
  std::vector<KvSpaceRecord> records;
  MNEMO_RETURN_IF_ERROR(LoadRecords(*store_, storage::kNextKvSpaceIdKey,
                                    storage::kKvSpaceMetaPrefix, &next_kv_space_id_, &records));
  for (auto& r : records) {
    std::string name = r.config.name;
    MNEMO_RETURN_IF_ERROR(KvSpace::Validate(r.config));
    auto space = std::make_shared<KvSpace>(store_.get(), value_log_.get(), std::move(r), options_.now_ms);
    Status st = space->Load();
    if (!st.ok()) return Status(st.code(), "cannot load KV space '" + name + "': " + st.message());
    kv_spaces_.emplace(name, std::move(space));
  }
  return Status::OK();
}

Result<std::shared_ptr<KvSpace>> Engine::CreateKvSpace(const KvSpaceConfig& config) {
  MNEMO_RETURN_IF_ERROR(ValidateName(config.name, "KV space"));
  MNEMO_RETURN_IF_ERROR(KvSpace::Validate(config));
  KvSpaceRecord record;
  record.config = config;
  // Canonical names, so that stats show what the space does.
  record.config.dtype = kvcache::DtypeName(kvcache::ParseDtype(config.dtype).value());
  record.config.codec = kvcache::CodecSpec::Parse(config.codec)->Name();
  WriterLock lock(&mu_);
  if (closed_) return Status::FailedPrecondition("engine is closed");
  if (kv_spaces_.count(config.name) != 0) {
    return Status::AlreadyExists("KV space '" + config.name + "' already exists");
  }
  record.id = next_kv_space_id_;
  MNEMO_RETURN_IF_ERROR(WriteNewRecord(store_.get(), storage::KvSpaceMetaKey(config.name),
                                       record.Encode(), storage::kNextKvSpaceIdKey,
                                       &next_kv_space_id_));
  auto space = std::make_shared<KvSpace>(store_.get(), value_log_.get(), std::move(record), options_.now_ms);
  kv_spaces_.emplace(config.name, space);
  return space;
}

Status Engine::DropKvSpace(std::string_view name) {
  WriterLock lock(&mu_);
  auto it = kv_spaces_.find(name);
  if (it == kv_spaces_.end()) return Status::NotFound("no KV space named '" + std::string(name) + "'");
  MNEMO_RETURN_IF_ERROR(it->second->Drop());
  kv_spaces_.erase(it);
  return Status::OK();
}

Result<std::shared_ptr<KvSpace>> Engine::GetKvSpace(std::string_view name) const {
  ReaderLock lock(&mu_);
  auto it = kv_spaces_.find(name);
  if (it == kv_spaces_.end()) return Status::NotFound("no KV space named '" + std::string(name) + "'");
  return it->second;
}

std::vector<KvSpaceStats> Engine::ListKvSpaces() const {
  ReaderLock lock(&mu_);
  std::vector<KvSpaceStats> out;
  for (auto& [name, s] : kv_spaces_) out.push_back(s->Stats());
  return out;
}

Status Engine::DropCollection(std::string_view name) {
  WriterLock lock(&mu_);
  auto it = collections_.find(name);
  if (it == collections_.end()) {
    return Status::NotFound("no collection named '" + std::string(name) + "'");
  }
  MNEMO_RETURN_IF_ERROR(it->second->Drop());
  collections_.erase(it);
  return Status::OK();
}

Result<std::shared_ptr<Collection>> Engine::GetCollection(std::string_view name) const {
  ReaderLock lock(&mu_);
  auto it = collections_.find(name);
  if (it == collections_.end()) {
    return Status::NotFound("no collection named '" + std::string(name) + "'");
  }
  return it->second;
}

std::vector<CollectionStats> Engine::ListCollections() const {
  std::vector<std::shared_ptr<Collection>> all;
  {
    ReaderLock lock(&mu_);
    for (auto& [name, c] : collections_) all.push_back(c);
  }
  std::vector<CollectionStats> out;
  for (auto& c : all) out.push_back(c->Stats());
  return out;
}

Status Engine::Backup(const std::string& dir) {
  namespace fs = std::filesystem;
  const fs::path path(dir);
  std::error_code ec;
  if (dir.empty() || !path.is_absolute()) {
    return Status::InvalidArgument("backup directory must be an absolute path, got '" + dir + "'");
  }
  if (!options_.backup_root.empty()) {
    const auto root = fs::weakly_canonical(options_.backup_root, ec);
    const auto parent = fs::weakly_canonical(path.parent_path(), ec);
    auto rel = parent.lexically_relative(root);
    if (rel.empty() || *rel.begin() == "..") {
      return Status::PermissionDenied("backups go inside '" + options_.backup_root + "', not '" +
                                      dir + "'");
    }
  }
  if (fs::exists(path, ec)) return Status::InvalidArgument("backup directory '" + dir + "' exists");
  if (!fs::is_directory(path.parent_path(), ec)) {
    return Status::InvalidArgument("backup directory's parent '" + path.parent_path().string() +
                                   "' is not a directory");
  }
  std::vector<std::shared_ptr<Collection>> all;
  {
    ReaderLock lock(&mu_);
    if (closed_) return Status::FailedPrecondition("engine is closed");
    for (auto& [name, c] : collections_) all.push_back(c);
  }
  for (auto& c : all) MNEMO_RETURN_IF_ERROR(c->SaveSnapshot());
  // No value file may go between the checkpoint and its copy.
  storage::ValueLog::DeletionHold hold(value_log_.get());
  Status st = store_->Checkpoint(dir);
  if (st.ok()) st = value_log_->LinkInto(dir + "/" + kValueLogDir);
  if (!st.ok()) fs::remove_all(path, ec);
  return st;
}

Status Engine::Close() {
  WriterLock lock(&mu_);
  if (closed_) return Status::OK();
  closed_ = true;
  Status first;
  for (auto& [name, c] : collections_) {
    Status st = c->SaveSnapshot();
    if (!st.ok() && first.ok()) first = st;
  }
  Status st = store_->Flush();
  if (!st.ok() && first.ok()) first = st;
  return first;
}

}  // namespace mnemo::engine
