import { chmod, type FileHandle, mkdir, open, symlink } from "node:fs/promises";
import path from "node:path";
import type { EntryType, TreeEntry } from "./tree.ts";

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const S_IFMT = 0o170000;
const TRAILER = "TRAILER!!!";
const CHUNK = 1 << 20;

const typeBits: Record<EntryType, number> = { dir: S_IFDIR, file: S_IFREG, symlink: S_IFLNK };

function header(f: { ino: number; mode: number; nlink: number; mtime: number; size: number; name: string }): Buffer {
  const nameBytes = Buffer.from(`${f.name}\0`);
  const hex = (n: number) => n.toString(16).padStart(8, "0");
  // newc: magic, ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor, rdevminor, namesize, check
  const fields = [f.ino, f.mode, 0, 0, f.nlink, f.mtime, f.size, 0, 0, 0, 0, nameBytes.length, 0];
  const head = Buffer.from(`070701${fields.map(hex).join("")}`, "latin1");
  return Buffer.concat([head, nameBytes, Buffer.alloc(pad4(head.length + nameBytes.length))]);
}

function pad4(n: number): number {
  return (4 - (n % 4)) % 4;
}

/** Buffers small writes so a few hundred headers do not cost a few hundred syscalls. */
class Writer {
  private parts: Buffer[] = [];
  private pending = 0;
  constructor(private readonly fh: FileHandle) {}
  async write(b: Buffer): Promise<void> {
    this.parts.push(b);
    this.pending += b.length;
    if (this.pending >= CHUNK) await this.flush();
  }
  async flush(): Promise<void> {
    if (this.pending === 0) return;
    await this.fh.write(Buffer.concat(this.parts));
    this.parts = [];
    this.pending = 0;
  }
}

/**
 * Writes a newc ("070701") archive of the entries (sorted, parents first) read from root: uid/gid 0, every mtime
 * set to `mtime`, inode numbers in entry order, no device numbers, so the same tree always gives the same bytes.
 */
export async function writeNewc(root: string, entries: TreeEntry[], outFile: string, mtime: number): Promise<void> {
  const out = await open(outFile, "w");
  const w = new Writer(out);
  try {
    let ino = 0;
    for (const e of entries) {
      const mode = typeBits[e.type] | e.mode;
      await w.write(header({ ino: ++ino, mode, nlink: e.type === "dir" ? 2 : 1, mtime, size: e.size, name: e.path }));
      if (e.type === "symlink") await w.write(Buffer.from(e.target ?? ""));
      if (e.type === "file") await copyInto(w, path.join(root, e.path), e.size);
      await w.write(Buffer.alloc(pad4(e.size)));
    }
    await w.write(header({ ino: 0, mode: 0, nlink: 1, mtime: 0, size: 0, name: TRAILER }));
    await w.flush();
  } finally {
    await out.close();
  }
}

async function copyInto(w: Writer, file: string, size: number): Promise<void> {
  const fh = await open(file, "r");
  try {
    let done = 0;
    while (done < size) {
      const buf = Buffer.alloc(Math.min(CHUNK, size - done));
      const { bytesRead } = await fh.read(buf, 0, buf.length, done);
      if (bytesRead === 0) throw new Error(`${file} shrank while it was being archived (${done} of ${size} bytes)`);
      await w.write(buf.subarray(0, bytesRead));
      done += bytesRead;
    }
  } finally {
    await fh.close();
  }
}

/** An entry read back from a newc archive. */
export interface NewcEntry {
  name: string;
  type: EntryType;
  mode: number;
  size: number;
  target?: string;
  /** Offset of the content in the archive (files). */
  offset: number;
}

/** Lists a newc archive; anything but directories, regular files and symlinks (or a bad header) is an error. */
export async function readNewc(file: string): Promise<NewcEntry[]> {
  const fh = await open(file, "r");
  try {
    const entries: NewcEntry[] = [];
    let pos = 0;
    for (;;) {
      const head = Buffer.alloc(110);
      const { bytesRead } = await fh.read(head, 0, 110, pos);
      const magic = head.toString("latin1", 0, 6);
      if (bytesRead < 110 || magic !== "070701") throw new Error(`${file}: no newc header at offset ${pos}`);
      const field = (i: number) => Number.parseInt(head.toString("latin1", 6 + i * 8, 14 + i * 8), 16);
      const rawMode = field(1);
      const size = field(6);
      const nameSize = field(11);
      const nameBuf = Buffer.alloc(nameSize);
      await fh.read(nameBuf, 0, nameSize, pos + 110);
      const name = nameBuf.toString("utf8", 0, nameSize - 1);
      pos += 110 + nameSize + pad4(110 + nameSize);
      if (name === TRAILER) return entries;
      const fmt = rawMode & S_IFMT;
      const type: EntryType | undefined =
        fmt === S_IFDIR ? "dir" : fmt === S_IFREG ? "file" : fmt === S_IFLNK ? "symlink" : undefined;
      if (!type) throw new Error(`${file}: entry ${name} has unsupported file type 0${fmt.toString(8)}`);
      const entry: NewcEntry = { name, type, mode: rawMode & 0o7777, size, offset: pos };
      if (type === "symlink") {
        const t = Buffer.alloc(size);
        await fh.read(t, 0, size, pos);
        entry.target = t.toString("utf8");
      }
      entries.push(entry);
      pos += size + pad4(size);
    }
  } finally {
    await fh.close();
  }
}

/** Extracts a newc archive into dest (which must exist) with the archive's modes; times and owners are left alone. */
export async function extractNewc(file: string, dest: string): Promise<NewcEntry[]> {
  const entries = await readNewc(file);
  const src = await open(file, "r");
  try {
    for (const e of entries) {
      const abs = path.join(dest, e.name);
      if (!abs.startsWith(`${dest}${path.sep}`)) throw new Error(`${file}: entry ${e.name} points outside the archive`);
      if (e.type === "dir") await mkdir(abs, { recursive: true });
      else if (e.type === "symlink") await symlink(e.target ?? "", abs);
      else {
        const out = await open(abs, "wx");
        try {
          for (let done = 0; done < e.size; ) {
            const buf = Buffer.alloc(Math.min(CHUNK, e.size - done));
            const { bytesRead } = await src.read(buf, 0, buf.length, e.offset + done);
            if (bytesRead === 0) throw new Error(`${file}: entry ${e.name} is truncated`);
            await out.write(buf.subarray(0, bytesRead));
            done += bytesRead;
          }
        } finally {
          await out.close();
        }
      }
      if (e.type === "file") await chmod(abs, e.mode);
    }
    // Explicit chmod so the umask cannot change modes (/tmp 1777); directories last so a read-only one cannot block
    // its own contents.
    for (const e of entries) if (e.type === "dir") await chmod(path.join(dest, e.name), e.mode);
    return entries;
  } finally {
    await src.close();
  }
}
