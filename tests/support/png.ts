import sharp from 'sharp';

/** A solid-colour RGB PNG of the given size (default mid grey). */
export async function makePng(width: number, height: number, rgb: [number, number, number] = [128, 128, 128]): Promise<Buffer> {
  const [r, g, b] = rgb;
  return sharp({ create: { width, height, channels: 3, background: { r, g, b } } })
    .png()
    .toBuffer();
}
