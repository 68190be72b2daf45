// Apache ECharts, only the parts the console draws (tree-shaken through echarts/core).
import * as echarts from 'echarts/core'
import { LineChart, BarChart, PieChart } from 'echarts/charts'
import {
  GridComponent, TooltipComponent, LegendComponent, MarkLineComponent, MarkAreaComponent,
  DataZoomComponent, AriaComponent, TitleComponent,
} from 'echarts/components'
import { CanvasRenderer } from 'echarts/renderers'

echarts.use([LineChart, BarChart, PieChart, GridComponent, TooltipComponent, LegendComponent,
  MarkLineComponent, MarkAreaComponent, DataZoomComponent, AriaComponent, TitleComponent,
  CanvasRenderer])

export { echarts }

export const COLORS = {
  critical: '#c62828', major: '#e65100', minor: '#f9a825', info: '#607d8b',
  line: '#1565c0', limit: '#c62828', ok: '#2e7d32',
}
