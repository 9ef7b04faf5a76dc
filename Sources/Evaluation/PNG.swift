import Foundation

/// An 8-bit RGB colour.
public struct RGB: Equatable, Hashable, Sendable {
    public var r: UInt8
    public var g: UInt8
    public var b: UInt8

    public init(_ r: UInt8, _ g: UInt8, _ b: UInt8) {
        self.r = r
        self.g = g
        self.b = b
    }

    public static let white = RGB(255, 255, 255)
    public static let black = RGB(0, 0, 0)
}

/// A raster of RGB pixels, row-major from the top-left corner, 3 bytes per pixel.
public struct RGBImage: Equatable, Sendable {
    public let width: Int
    public let height: Int
    /// `[height, width, 3]`, row-major.
    public private(set) var pixels: [UInt8]

    /// An image filled with one colour.
    public init(width: Int, height: Int, fill: RGB = .white) {
        precondition(width > 0 && height > 0, "an image needs at least one pixel")
        self.width = width
        self.height = height
        pixels = [UInt8](repeating: 0, count: width * height * 3)
        fillRect(x: 0, y: 0, width: width, height: height, fill)
    }

    /// The pixel at column `x`, row `y`.
    public subscript(x: Int, y: Int) -> RGB {
        get {
            let i = (y * width + x) * 3
            return RGB(pixels[i], pixels[i + 1], pixels[i + 2])
        }
        set {
            let i = (y * width + x) * 3
            pixels[i] = newValue.r
            pixels[i + 1] = newValue.g
            pixels[i + 2] = newValue.b
        }
    }

    /// Paints a rectangle, clipped to the image.
    public mutating func fillRect(x: Int, y: Int, width w: Int, height h: Int, _ color: RGB) {
        let x0 = max(0, x), y0 = max(0, y)
        let x1 = min(width, x + w), y1 = min(height, y + h)
        guard x0 < x1, y0 < y1 else { return }
        for row in y0..<y1 {
            for column in x0..<x1 { self[column, row] = color }
        }
    }

    /// Copies `other` with its top-left corner at (`x`, `y`), clipped to this image.
    public mutating func draw(_ other: RGBImage, x: Int, y: Int) {
        for row in 0..<other.height where (0..<height).contains(y + row) {
            for column in 0..<other.width where (0..<width).contains(x + column) {
                self[x + column, y + row] = other[column, row]
            }
        }
    }
}

/// A minimal PNG encoder: 8-bit truecolour (RGB), no interlacing, filter type 0 on every
/// scanline, and a zlib stream of stored (uncompressed) deflate blocks. Images for the demo are
/// small (a few hundred KiB raw), so compression would buy little and cost a real deflate
/// implementation; every decoder accepts stored blocks.
public enum PNG {
    /// The eight bytes every PNG file starts with.
    public static let signature: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]

    /// The largest payload of one stored deflate block (its length field is 16 bits).
    static let maxStoredBlock = 65_535

    /// Encodes an image as a PNG file.
    /// - Returns: the file's bytes: signature, IHDR, one IDAT, IEND.
    public static func encode(_ image: RGBImage) -> Data {
        var out = Data(signature)
        var header = [UInt8]()
        header += bigEndian(UInt32(image.width))
        header += bigEndian(UInt32(image.height))
        header += [8, 2, 0, 0, 0]  // bit depth 8, colour type 2 (RGB), deflate, filter method 0, no interlace
        appendChunk("IHDR", header, to: &out)
        // Each scanline is a filter-type byte (0: none) followed by the row's pixels.
        let rowBytes = image.width * 3
        var raw = [UInt8]()
        raw.reserveCapacity(image.height * (rowBytes + 1))
        image.pixels.withUnsafeBufferPointer { p in
            for y in 0..<image.height {
                raw.append(0)
                raw += p[(y * rowBytes)..<((y + 1) * rowBytes)]
            }
        }
        appendChunk("IDAT", zlibStored(raw), to: &out)
        appendChunk("IEND", [], to: &out)
        return out
    }

    /// Writes `image` as a PNG file (atomically).
    /// - Throws: file-system errors.
    public static func write(_ image: RGBImage, to url: URL) throws {
        try encode(image).write(to: url, options: .atomic)
    }

    /// A zlib stream (RFC 1950) holding `data` in stored deflate blocks (RFC 1951 §3.2.4).
    static func zlibStored(_ data: [UInt8]) -> [UInt8] {
        // CMF 0x78: deflate with a 32 KiB window; FLG 0x01 makes (CMF·256 + FLG) divisible by 31.
        var out: [UInt8] = [0x78, 0x01]
        var offset = 0
        repeat {
            let length = min(maxStoredBlock, data.count - offset)
            let final: UInt8 = offset + length == data.count ? 1 : 0
            out.append(final)  // BFINAL, BTYPE 00 (stored); the rest of the byte is padding
            out += [UInt8(length & 0xFF), UInt8(length >> 8)]
            out += [UInt8(~length & 0xFF), UInt8((~length >> 8) & 0xFF)]
            out += data[offset..<(offset + length)]
            offset += length
        } while offset < data.count
        out += bigEndian(adler32(data))
        return out
    }

    /// CRC-32 (ISO-HDLC, reflected polynomial 0xEDB88320), as PNG chunks and zip use it.
    public static func crc32<C: Sequence>(_ bytes: C) -> UInt32 where C.Element == UInt8 {
        var crc: UInt32 = 0xFFFF_FFFF
        for byte in bytes { crc = crcTable[Int((crc ^ UInt32(byte)) & 0xFF)] ^ (crc >> 8) }
        return crc ^ 0xFFFF_FFFF
    }

    /// Adler-32 (RFC 1950 §8), the checksum that ends a zlib stream.
    public static func adler32<C: Sequence>(_ bytes: C) -> UInt32 where C.Element == UInt8 {
        var a: UInt32 = 1, b: UInt32 = 0
        var pending = 0
        for byte in bytes {
            a += UInt32(byte)
            b += a
            pending += 1
            // 5552 is the longest run before b can overflow 32 bits (zlib's NMAX).
            if pending == 5552 {
                a %= 65521
                b %= 65521
                pending = 0
            }
        }
        return ((b % 65521) << 16) | (a % 65521)
    }

    private static let crcTable: [UInt32] = (0..<256).map { n -> UInt32 in
        var c = UInt32(n)
        for _ in 0..<8 { c = c & 1 != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        return c
    }

    private static func appendChunk(_ type: String, _ payload: [UInt8], to out: inout Data) {
        let typeBytes = Array(type.utf8)
        out.append(contentsOf: bigEndian(UInt32(payload.count)))
        out.append(contentsOf: typeBytes)
        out.append(contentsOf: payload)
        out.append(contentsOf: bigEndian(crc32(typeBytes + payload)))
    }

    private static func bigEndian(_ v: UInt32) -> [UInt8] {
        [UInt8(v >> 24), UInt8((v >> 16) & 0xFF), UInt8((v >> 8) & 0xFF), UInt8(v & 0xFF)]
    }
}
